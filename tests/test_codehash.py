"""Runs keyed on the code that computes them (drostudy.codehash, drostudy.runs.run_or_resume): a changed
module reruns the runs that depend on it and nothing else, in a package on disk and in drostudy itself."""

from __future__ import annotations

import dataclasses
import importlib
import shutil
import sys
from pathlib import Path

import pytest

from drostudy import codehash
from drostudy.codehash import code_fingerprint, dependencies, function_roots, notebook_fingerprint
from drostudy.io import METRICS_FILE
from drostudy.runs import run_all

FILES = {
    "fakepkg/__init__.py": "",
    "fakepkg/core.py": "def loss(x):\n    return x * 2\n",
    "fakepkg/grader.py": "def grade(x):\n    return x > 1\n",
    "fakepkg/unused.py": "VALUE = 1\n",
    "fakepkg/reward/__init__.py": "",
    "fakepkg/reward/train.py": (
        "from fakepkg.core import loss\n\n\ndef train(config):\n"
        "    return {'per_domain': {'a': {'value': loss(config.seed)}}}\n"
    ),
    "fakepkg/rl/__init__.py": "",
    "fakepkg/rl/data.py": "ROWS = 3\n",  # reached by the caller, not by an import: the stage rule covers it
    "fakepkg/rl/train.py": (
        "from fakepkg import core\n\n\ndef train(config):\n"
        "    from fakepkg.grader import grade  # a lazy import is a dependency too\n"
        "    return {'per_domain': {'a': {'value': float(grade(core.loss(config.seed)))}}}\n"
    ),
}


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = 0


@pytest.fixture
def fakepkg(tmp_path, monkeypatch):
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m == "fakepkg" or m.startswith("fakepkg.")]:
        del sys.modules[name]


def test_dependencies_follow_imports_lazy_ones_and_whole_stages(fakepkg):
    assert dependencies(["fakepkg.reward.train"], fakepkg) == [
        "fakepkg.core",
        "fakepkg.reward",
        "fakepkg.reward.train",
    ]
    assert dependencies(["fakepkg.rl.train"], fakepkg) == [
        "fakepkg.core",
        "fakepkg.grader",
        "fakepkg.rl",
        "fakepkg.rl.data",
        "fakepkg.rl.train",
    ]


def test_a_changed_module_reruns_exactly_the_runs_that_depend_on_it(fakepkg, tmp_path):
    reward = importlib.import_module("fakepkg.reward.train")
    rl = importlib.import_module("fakepkg.rl.train")
    calls: list[str] = []

    def study():
        """Both stages' runs through run_all, keyed on their training modules' code."""
        for stage, module in (("reward", reward), ("rl", rl)):

            def train(config, module=module, stage=stage):
                calls.append(stage)
                return module.train(config)

            train.__module__ = module.__name__  # as if defined there (function_roots reads this)
            code = code_fingerprint(function_roots(train, "fakepkg"), fakepkg)
            for config in (Config(0), Config(1)):
                from drostudy.runs import run_folder, run_or_resume

                out = run_folder(tmp_path / "runs" / stage, stage, config)
                run_or_resume(config, out, train, code)

    study()
    assert calls == ["reward", "reward", "rl", "rl"]
    calls.clear()
    study()  # nothing changed: every run reused
    assert calls == []
    (fakepkg / "fakepkg/grader.py").write_text("def grade(x):\n    return x >= 1\n")
    study()  # the grader: only the rl runs
    assert calls == ["rl", "rl"]
    calls.clear()
    (fakepkg / "fakepkg/unused.py").write_text("VALUE = 2\n")
    study()  # a module nobody imports: nothing
    assert calls == []
    (fakepkg / "fakepkg/core.py").write_text("def loss(x):\n    return x * 3\n")
    study()  # the core loss: everything
    assert calls == ["reward", "reward", "rl", "rl"]


def test_metrics_record_the_code_and_a_stale_run_says_what_changed(fakepkg, tmp_path, capsys):
    module = importlib.import_module("fakepkg.reward.train")
    out = tmp_path / "run"
    from drostudy.runs import run_or_resume

    first = run_or_resume(
        Config(), out, module.train, code_fingerprint(["fakepkg.reward.train"], fakepkg)
    )
    assert set(first["code"]["modules"]) == {"fakepkg.core", "fakepkg.reward", "fakepkg.reward.train"}
    (fakepkg / "fakepkg/core.py").write_text("def loss(x):\n    return x * 5\n")
    run_or_resume(Config(), out, module.train, code_fingerprint(["fakepkg.reward.train"], fakepkg))
    assert "computed by other code (fakepkg.core): running it again" in capsys.readouterr().out
    assert (out / METRICS_FILE).exists()


def copy_of_drostudy(tmp_path: Path) -> Path:
    shutil.copytree(codehash.package_root() / "drostudy", tmp_path / "drostudy")
    return tmp_path


@pytest.mark.parametrize(
    ("changed", "stale"),
    [
        ("drostudy/rl/testbed_data.py", {"rl"}),  # the testbed's data: the RL stage only
        ("drostudy/dpo/fast.py", {"dpo"}),
        ("drostudy/reward/fast.py", {"reward", "rl"}),  # the RL stage trains its reward model with it
        ("drostudy/weights.py", {"reward", "dpo", "rl"}),  # the core: every stage
        ("drostudy/toy/explore.py", set()),  # notebook 01's widgets: no training run
    ],
)
def test_which_stages_of_drostudy_a_change_reruns(tmp_path, changed, stale):
    """The training functions notebooks 02-04 run, fingerprinted in a copy of drostudy before and after an
    edit of one module."""
    roots = {
        "reward": ["drostudy.reward.cached_runs"],
        "dpo": ["drostudy.dpo.study"],
        "rl": ["drostudy.rl.testbed_plan", "drostudy.rl.run"],
    }
    root = copy_of_drostudy(tmp_path)
    before = {stage: code_fingerprint(r, root)["fingerprint"] for stage, r in roots.items()}
    path = root / changed
    path.write_text(path.read_text() + "\n# edited\n")
    after = {stage: code_fingerprint(r, root)["fingerprint"] for stage, r in roots.items()}
    assert {stage for stage in roots if before[stage] != after[stage]} == stale


def test_fingerprints_read_source_only(tmp_path):
    """The same source in another folder gives the same fingerprint (no paths, no mtimes)."""
    root = copy_of_drostudy(tmp_path)
    assert code_fingerprint(["drostudy.rl.run"], root) == code_fingerprint(["drostudy.rl.run"])


def test_notebook_fingerprint_follows_code_cells_and_package_not_outputs(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# q"),
        nbformat.v4.new_code_cell("from drostudy import weights"),
    ]
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, path)
    first = notebook_fingerprint(path)
    nb.cells[0].source = "# another question"
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="printed")]
    nbformat.write(nb, path)
    assert notebook_fingerprint(path) == first
    nb.cells[1].source = "from drostudy import weights\nx = 1"
    nbformat.write(nb, path)
    assert notebook_fingerprint(path).split("+")[0] != first.split("+")[0]
    assert notebook_fingerprint(path).split("+")[1] == first.split("+")[1]


def test_unknown_or_mixed_roots_are_refused():
    with pytest.raises(ValueError, match="unknown module"):
        dependencies(["drostudy.nope"])
    with pytest.raises(ValueError, match="one package"):
        dependencies(["drostudy.weights", "fakepkg.core"])


def test_run_all_reuses_runs_of_unchanged_code(tmp_path):
    """drostudy's own path: run_all fingerprints the training function's module once; a second call with
    the same code reuses every run."""
    calls = []

    def train(config):
        calls.append(config.seed)
        return {"per_domain": {}}

    configs = [("run", Config(0)), ("run", Config(1))]
    first = run_all(configs, tmp_path, train)
    assert calls == [0, 1] and run_all(configs, tmp_path, train) == first and calls == [0, 1]
    assert first[0]["code"]["fingerprint"] == code_fingerprint(function_roots(train))["fingerprint"]
