"""The README's vocabulary table is the configs' vocabulary: every name it lists is a field of exactly the
stages it names, every field two stages share is listed, the old names parse only as deprecated flags, and no
notebook parameter uses an old name."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import pytest

from drostudy.config import add_dataclass_arguments, dataclass_from_args, renamed_fields
from drostudy.dpo.run import DPORunConfig
from drostudy.reward.run import RMConfig
from drostudy.rl.run import RLConfig

ROOT = Path(__file__).resolve().parent.parent
STAGES = {"rm": RMConfig, "dpo": DPORunConfig, "rl": RLConfig}


def table_rows() -> list[tuple[list[str], set[str], list[str]]]:
    """(names, stages, old names) of each row between the README's vocabulary markers."""
    text = (ROOT / "README.md").read_text()
    body = text.split("<!-- vocabulary:start -->")[1].split("<!-- vocabulary:end -->")[0]
    rows = []
    for line in body.strip().splitlines()[2:]:  # after the header and its rule
        name, stages, _, old = (cell.strip() for cell in line.strip().strip("|").split("|"))
        rows.append(
            (
                re.findall(r"`(\w+)`", name),
                {s.strip() for s in stages.split(",")},
                re.findall(r"`(\w+)`", old),
            )
        )
    return rows


ROWS = table_rows()
FIELDS = {stage: {f.name for f in dataclasses.fields(cls)} for stage, cls in STAGES.items()}


def test_the_table_has_rows_and_names_known_stages():
    assert len(ROWS) >= 15
    for names, stages, _ in ROWS:
        assert names and stages <= STAGES.keys(), (names, stages)


@pytest.mark.parametrize("names,stages,old", ROWS, ids=[",".join(r[0]) for r in ROWS])
def test_each_name_is_a_field_of_exactly_its_stages(names, stages, old):
    for name in names:
        having = {stage for stage, fields in FIELDS.items() if name in fields}
        assert having == stages, (
            f"{name}: the README says {sorted(stages)}, the configs {sorted(having)}"
        )


def test_every_field_two_stages_share_is_in_the_table():
    listed = {name for names, _, _ in ROWS for name in names}
    counts: dict[str, int] = {}
    for fields in FIELDS.values():
        for name in fields:
            counts[name] = counts.get(name, 0) + 1
    shared = {name for name, n in counts.items() if n >= 2}
    assert shared <= listed, sorted(shared - listed)


def test_old_names_are_the_deprecated_flags():
    """The old names in a row are exactly the flags that still parse into that row's fields."""
    for names, stages, old_names in ROWS:
        parsing = {
            old for stage in stages for old, new in renamed_fields(STAGES[stage]).items() if new in names
        }
        assert set(old_names) == parsing, (names, sorted(old_names), sorted(parsing))


@pytest.mark.parametrize("stage", STAGES)
def test_deprecated_flags_parse_into_their_new_field(stage):
    """Each old flag, given a value that differs from the field's default, sets the new field to it (in the
    new unit where the class converts it: rm's --epochs 2 is two passes of batches)."""
    cls = STAGES[stage]
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, cls)
    required = ["--reward-model", "tiny-bert"] if cls is RLConfig else []
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for old, new in renamed_fields(cls).items():
        value = {str: "tiny-llama", int: 2, float: 0.25}[type(defaults[new])]
        assert value != defaults[new]
        with pytest.warns(FutureWarning, match=f"--{old.replace('_', '-')} is deprecated"):
            args = parser.parse_args([f"--{old.replace('_', '-')}", str(value), *required])
        config = dataclass_from_args(cls, args)
        expected = cls.from_renamed(old, value, defaults) if hasattr(cls, "from_renamed") else value
        assert getattr(config, new) == expected, (stage, old, new)


def parameter_names(notebook: Path) -> set[str]:
    """The names the notebook's `parameters` cell assigns."""
    cells = json.loads(notebook.read_text())["cells"]
    source = "".join(
        "".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])
    )
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*=", source, flags=re.M))


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("0*.ipynb")), ids=lambda p: p.stem)
def test_notebook_parameters_use_no_old_name(notebook):
    renamed = {o.upper() for cls in STAGES.values() for o in renamed_fields(cls)}
    current = {
        name.upper() for fields in FIELDS.values() for name in fields
    }  # MAX_LENGTH: old in rm only
    old = renamed - current
    assert not parameter_names(notebook) & old, sorted(parameter_names(notebook) & old)
