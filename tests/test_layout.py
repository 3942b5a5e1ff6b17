"""The package's layout: no import cycles, arrows pointing down the layers, analysis apart from training,
no module over 300 lines without a stated reason.

Imports are read with `ast` (module level and inside functions alike), so a lazy import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "drostudy"
MAX_LINES = 300
# Layers from the bottom up; a module may import its own layer or a lower one, never a higher one.
LAYERS = (
    ("drostudy.threads",),  # stdlib only: the one place that sets thread counts
    (  # the core: exact worst-case weights and the robust losses, torch only
        "drostudy._cpu_solvers",
        "drostudy._solvers",
        "drostudy.weights",
        "drostudy.distributed",
        "drostudy.losses",
        "drostudy.wdpo",
    ),
    ("drostudy",),  # the package's __init__ re-exports the weights
    (  # what every stage shares: the vocabulary (config, on the weights' ball_is_point), files, models, data
        "drostudy.codehash",
        "drostudy.config",
        "drostudy.io",
        "drostudy.progress",
        "drostudy.figure_index",
        "drostudy.figure_files",
        "drostudy.packaged",
        "drostudy.models",
        "drostudy.answers",
        "drostudy.evaluate",
        "drostudy.plotting",
        "drostudy.data",
    ),
    # running experiments (runs, the TRL drop-ins) beside analysing their results, which imports neither
    ("drostudy.runs", "drostudy.dropin", "drostudy.analysis"),
    (
        "drostudy.reward",
        "drostudy.dpo",
        "drostudy.rl",
        "drostudy.toy",
    ),  # each plans and runs its notebook
    ("drostudy.capacity",),  # notebook 06: the stages' plans at higher capacity (issue #25)
    ("drostudy.runner", "drostudy.__main__"),
)
STAGES = ("drostudy.reward", "drostudy.dpo", "drostudy.rl")
# What drostudy.analysis never imports: it turns finished results into tables, intervals, figures and
# sentences, and trains nothing.
TRAINING = (*STAGES, "drostudy.runs", "drostudy.models", "drostudy.dropin")
# Modules allowed past MAX_LINES, each with its reason (also stated at the module's top).
LONG_MODULES: dict[str, str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set[str]:
    """The package modules `name` imports (`from pkg import mod` counts as importing pkg.mod, not pkg)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
            base = base.rstrip(".")
            submodules = {f"{base}.{alias.name}" for alias in node.names} & MODULES.keys()
            found.update(submodules or {base})  # `from pkg import mod` imports pkg.mod
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def layer(name: str) -> int:
    """The layer of the longest listed name that is `name` or a package above it; -1 if none."""
    matches = [
        (len(m), i)
        for i, members in enumerate(LAYERS)
        for m in members
        if name == m or name.startswith(m + ".")
    ]
    return max(matches)[1] if matches else -1


def test_every_module_has_a_layer():
    assert [m for m in MODULES if layer(m) < 0] == []


def test_arrows_point_down():
    upward = [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in GRAPH.items()
        for b in targets
        if layer(b) > layer(a)
    ]
    assert upward == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_layers_of_known_modules():
    assert (layer("drostudy"), layer("drostudy.weights"), layer("drostudy.capacity.dpo")) == (2, 1, 6)
    assert layer("drostudy.runner.study") == 7


def within(name: str, packages: tuple[str, ...]) -> bool:
    """Whether module `name` is one of `packages` or inside one."""
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_analysis_imports_no_training_code():
    """analysis/ reads finished results: no stage package, no runs, models or TRL drop-ins."""
    imports = [
        f"{a} imports {b}"
        for a, targets in sorted(GRAPH.items())
        if within(a, ("drostudy.analysis",))
        for b in sorted(targets)
        if within(b, TRAINING)
    ]
    assert imports == []


def test_no_stage_imports_analysis():
    """A stage plans and runs its experiments; turning their results into tables is analysis/'s."""
    imports = [
        f"{a} imports {b}"
        for a, targets in sorted(GRAPH.items())
        if within(a, STAGES)
        for b in sorted(targets)
        if within(b, ("drostudy.analysis",))
    ]
    assert imports == []


def test_within_matches_packages_not_prefixes():
    assert within("drostudy.rl.run", STAGES) and within("drostudy.rl", STAGES)
    assert not within("drostudy.rlhf", STAGES) and not within("drostudy.runs", STAGES)


def test_no_import_cycles():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_length(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES or name in LONG_MODULES, f"{name} has {lines} lines (max {MAX_LINES})"
