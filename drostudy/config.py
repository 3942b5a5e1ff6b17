"""The config vocabulary of the three stages, and config dataclasses <-> command lines.

One name per concept across RMConfig (drostudy.reward.run), DPORunConfig (drostudy.dpo.run) and RLConfig
(drostudy.rl.run): `model` is what the stage trains (a reward model, or a policy), `learning_rate` its
optimiser's rate, `n_eval` the held-out pairs or prompts per domain, `divergence`/`radius` the ball, and
`method` (a property) the label of the run: `ordinary` when the ball is a point (`ball_is_point`), else
the objective's name; `setting_label` the name of a setting in every results table. The one-line docstring
under each field is its --help text. The whole vocabulary is the table in the README ("One vocabulary").

Renamed flags still parse for one release, with a FutureWarning: RENAMED holds the renames every config
shares; a config adds its own in a `RENAMED_FIELDS` class attribute (old -> new), and converts an old value
whose unit changed in a `from_renamed(old, value, values)` classmethod (e.g. the reward model's epochs ->
steps).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import inspect
import textwrap
import typing
import warnings
from typing import Any

from drostudy.weights import ball_is_point

# old field / flag name -> its name now, in every config; the old flag still parses, with a FutureWarning
RENAMED = {"lr": "learning_rate", "n_test": "n_eval", "policy": "model"}


def renamed_fields(cls: type) -> dict[str, str]:
    """old flag name -> field of `cls`: the shared RENAMED and the class's own RENAMED_FIELDS."""
    names = {f.name for f in dataclasses.fields(cls)}
    pairs = {**RENAMED, **getattr(cls, "RENAMED_FIELDS", {})}
    return {old: new for old, new in pairs.items() if new in names and old not in names}


def method_label(divergence: str, radius: float, robust: str = "robust") -> str:
    """The `method` of a run: `ordinary` when the ball is a point, else `robust` (the objective's name)."""
    return "ordinary" if ball_is_point(divergence, radius) else robust


def setting_label(method: str, divergence: str = "", radius: float = 0.0, **knobs: float) -> str:
    """A setting's name in every results table: `ordinary`, `tv 0.5` (the example-level ball),
    `<method> tv 0.5` for another method over a ball (`group tv 0.5`, `doro tv 0.5 eps 0.1`), or the
    method's own name (`dr_dpo`, `wdpo`); keyword knobs are appended as `name value`, so ordinary training
    moved along its own knob reads `ordinary beta 0.4` (at the stage's default knob it is `ordinary`)."""
    knob_words = [f"{k} {v:g}" for k, v in knobs.items()]
    if method == "ordinary":
        return " ".join(["ordinary", *knob_words])
    ball = f"{divergence} {radius:g}" if divergence else ""
    head = ball if method == "robust" else " ".join(x for x in (method, ball) if x)
    return " ".join([head, *knob_words])


MODES = ("smoke", "default", "full")


def mode(smoke: bool, full: bool = False) -> str:
    """A notebook's mode from its SMOKE and FULL parameters: smoke (CI), default (the CPU study) or full (GPU)."""
    if smoke and full:
        raise ValueError("SMOKE and FULL are exclusive: set at most one of them")
    return "smoke" if smoke else "full" if full else "default"


def pick_sizes(presets: dict, smoke: bool, full: bool = False, **overrides):
    """The one SMOKE/FULL mechanism of the notebooks: the frozen sizes dataclass of the mode in `presets`
    (keys among MODES), with every override that is not None (a notebook parameter left at None keeps the
    mode's value). A tuple field takes a tuple, a list, one item, or the comma-separated string a notebook
    parameter or a sweep passes ("0.1,0.2"; "" for none), its items converted to the field's item type."""
    name = mode(smoke, full)
    if name not in presets:
        raise ValueError(f"this notebook has no {name!r} sizes; expected one of {list(presets)}")
    sizes = presets[name]
    fields = {f.name for f in dataclasses.fields(sizes)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown size overrides {unknown}; expected some of {sorted(fields)}")
    hints = typing.get_type_hints(type(sizes))
    given = {k: _as_field_value(hints[k], v) for k, v in overrides.items() if v is not None}
    return dataclasses.replace(sizes, **given)


def _as_field_value(tp: Any, value: Any) -> Any:
    """`value` as a field annotated `tp` holds it: tuple fields from a comma-separated string, a list or
    one item (why: papermill and the sweeps pass lists as strings); any other field unchanged."""
    if typing.get_origin(tp) is not tuple:
        return value
    (item, *_) = typing.get_args(tp) or (str,)
    if isinstance(value, str):
        value = [x.strip() for x in value.split(",") if x.strip()]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    return tuple(item(x) for x in value)


class UsageError(ValueError):
    """A bad value on the command line: `python -m drostudy` prints it as one `drostudy CMD: error:` line
    and exits with status 2, as argparse does for the values it checks itself."""


@contextlib.contextmanager
def usage_errors():
    """Inside, a ValueError (a config's own checks of the values given) becomes a UsageError; a ValueError
    raised later, while a command runs, keeps its traceback."""
    try:
        yield
    except UsageError:
        raise
    except ValueError as err:
        raise UsageError(str(err)) from err


def field_docs(cls: type) -> dict[str, str]:
    """Map each dataclass field to the string literal written on the line under it (cleanrl/tyro style)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for stmt, nxt in zip(body, body[1:], strict=False):  # pairs of neighbours
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def _parser_for(tp: Any):
    """argparse `type=` for a field annotation; tuples of strings are comma-separated lists."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item, *_) = typing.get_args(tp) or (str,)
        return lambda s: tuple(item(x) for x in s.split(",") if x)
    if origin is typing.Union or str(origin) == "types.UnionType":
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _parser_for(inner[0])
    if tp is bool:
        return _parse_bool
    return tp


def _parse_bool(s: str) -> bool:
    if s.lower() in {"1", "true", "yes"}:
        return True
    if s.lower() in {"0", "false", "no"}:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {s!r}")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add `--field-name` for every field of dataclass `cls`, typed, with its default and docstring."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=_parser_for(hints[f.name]),
            default=default,
            help=f"{docs.get(f.name, '')} (default: {shown})",
        )
    for old, new in renamed_fields(cls).items():
        parser.add_argument(
            "--" + old.replace("_", "-"),
            dest=RENAMED_DEST + old,
            type=_parser_for(hints[new]),
            action=_Renamed,
            new=new,
            help=argparse.SUPPRESS,
        )


RENAMED_DEST = "renamed:"  # namespace attribute of an old flag's value, converted by dataclass_from_args


class _Renamed(argparse.Action):
    """A renamed flag: keeps its value aside (for `from_renamed`) and warns once per use."""

    def __init__(self, *args, new: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        flag = "--" + self.new.replace("_", "-")
        warnings.warn(f"{option_string} is deprecated; use {flag}", FutureWarning, stacklevel=2)
        setattr(namespace, self.dest, values)


def dataclass_from_args(cls: type, args: argparse.Namespace):
    """Build `cls` from parsed arguments; its __post_init__ validates the values (a UsageError if bad).
    An old flag's value goes to its new field, through `cls.from_renamed` when the class has one."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
    with usage_errors():
        for old, new in renamed_fields(cls).items():
            value = getattr(args, RENAMED_DEST + old, None)
            if value is not None:
                convert = getattr(cls, "from_renamed", None)
                values[new] = convert(old, value, values) if convert else value
        return cls(**values)
