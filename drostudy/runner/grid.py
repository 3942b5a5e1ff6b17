"""A sweep's grid: parameter values from the command line, their combinations, each run's folder name,
and every value checked against the notebook's parameters cell or the command's options before anything
runs (drostudy.runner.sweep).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import itertools
import json
import os

from drostudy.config import RENAMED_DEST, dataclass_from_args
from drostudy.runner.notebooks import check_parameters, notebook_parameters
from drostudy.runner.tasks import COMMANDS, flag_value


def parse_value(text: str):
    """A command-line value: JSON literal (0.1, 3, true, null, "s"), True/False, else the string itself."""
    if text in ("True", "False"):
        return text == "True"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_param(spec: str) -> tuple[str, list]:
    """'radius=0,0.1,0.2' -> ('radius', [0, 0.1, 0.2]); ValueError naming the parameter when malformed."""
    name, sep, values = spec.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ValueError(f"--param {spec!r}: expected NAME=VALUE1,VALUE2,... with NAME an identifier")
    parsed = [parse_value(v.strip()) for v in values.split(",") if v.strip()]
    if not parsed:
        raise ValueError(f"parameter {name!r} has no values")
    if len({json.dumps(v) for v in parsed}) < len(parsed):
        raise ValueError(f"parameter {name!r} repeats a value: {parsed!r}")
    return name, parsed


def expand_grid(grid: dict | list[dict]) -> list[dict]:
    """All parameter combinations of a grid (name -> values) or of a list of grids, in order."""
    combos = []
    for part in [grid] if isinstance(grid, dict) else grid:
        names = list(part)
        combos += [dict(zip(names, values, strict=True)) for values in itertools.product(*part.values())]
    return combos


def run_id(params: dict) -> str:
    """Readable, stable folder name of a run: its parameters sorted by name, `a=1,b=x`."""
    text = ",".join(
        f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in sorted(params.items())
    )
    return text.replace(os.sep, "_").replace(" ", "") or "default"


def validate_grid(kind: str, target: str, names: list[str], combos: list[dict]) -> list[dict]:
    """Check every parameter against the notebook's parameters cell or the command's options (ValueError)."""
    if kind == "notebook":
        check_parameters(target, dict.fromkeys(names))
        defaults = notebook_parameters(target)
        return [{k: _coerce(k, v, defaults[k]) for k, v in c.items()} for c in combos]
    if target not in COMMANDS:
        raise ValueError(f"unknown command {target!r}; expected one of {sorted(COMMANDS)}")
    try:
        module = importlib.import_module(COMMANDS[target])
    except ImportError:  # a command still being written: its own parser checks the values at run time
        return combos
    parser = argparse.ArgumentParser()
    module.add_cli_arguments(parser)
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "out")}
    for combo in combos:
        for name, value in combo.items():
            _check_option(target, name, value, actions)
        _check_config(module, parser, combo)
    return combos


def _check_config(module, parser: argparse.ArgumentParser, combo: dict) -> None:
    """Build the command's config dataclass from one grid point, so its own checks (an unknown divergence,
    a radius out of range) fail now rather than in every run. Skipped when the module has no single one."""
    argv = [*itertools.chain(*((f"--{k.replace('_', '-')}", flag_value(v)) for k, v in combo.items()))]
    args = parser.parse_args([*argv, "--out", "-"])
    dests = {k for k in vars(args) if k != "out" and not k.startswith(RENAMED_DEST)}  # old flags aside
    found = [c for c in vars(module).values() if dataclasses.is_dataclass(c) and isinstance(c, type)]
    found = [c for c in found if {f.name for f in dataclasses.fields(c)} == dests]
    if len(found) == 1:
        try:
            dataclass_from_args(found[0], args)  # converts a deprecated flag's value as the command does
        except (ValueError, TypeError) as err:
            raise ValueError(f"grid point {combo}: {err}") from None


def _coerce(name: str, value, default):
    """`value` as the type of the notebook's default; ValueError naming the parameter when impossible."""
    kind = type(default)
    if kind is bool and value in (0, 1) and not isinstance(value, float):
        return bool(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (int, float)):
        return str(value)
    if kind in (bool, int, float, str) and type(value) is not kind:
        raise ValueError(
            f"parameter {name!r}: {value!r} is not a {kind.__name__} (its default is {default!r})"
        )
    return value


def _check_option(command: str, name: str, value, actions: dict) -> None:
    if name not in actions:
        raise ValueError(
            f"unknown parameter {name!r} for command {command!r}; expected one of {sorted(actions)}"
        )
    action = actions[name]
    try:
        parsed = action.type(flag_value(value)) if callable(action.type) else value
    except (ValueError, TypeError, argparse.ArgumentTypeError) as err:
        raise ValueError(
            f"parameter {name!r}: bad value {value!r} for command {command!r} ({err})"
        ) from None
    if action.choices is not None and parsed not in action.choices:
        raise ValueError(f"parameter {name!r}: {value!r}; expected one of {list(action.choices)}")
