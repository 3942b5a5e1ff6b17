"""Fingerprints of the code behind a result: which drostudy modules computed it, and a hash of their source.

A finished run (drostudy.runs) and a finished study notebook (drostudy.runner.study) are reused only while
the code they depend on is unchanged. "Depends on" is read from the source with `ast`, as
tests/test_layout.py reads the layers: every `import` of the package, at module level or inside a function
(a lazy import is still a dependency), followed transitively. One rule widens that: a result that touches a
stage package (drostudy.reward, drostudy.dpo, drostudy.rl) depends on all of that stage, because its data,
evaluation and training code reach a run through arguments as often as through imports (the testbed's
bandits are built by drostudy.rl.testbed_data and handed to the trainer by the caller).

Only source text enters the hash (no paths, no mtimes), so a fingerprint is the same on every clone of the
same commit. Modules reached only through `importlib` (the package's lazy `__getattr__`) are not followed:
no result is computed through that door.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "drostudy"
STAGES = ("reward", "dpo", "rl")  # subpackages a result depends on as a whole (module docstring)


def package_root(package: str = PACKAGE) -> Path:
    """The folder that holds `package` (the parent of drostudy/), found from this file or sys.modules."""
    import importlib

    return Path(importlib.import_module(package).__file__).resolve().parent.parent


def module_files(package: str = PACKAGE, root: str | os.PathLike | None = None) -> dict[str, Path]:
    """Module name -> source file of every module of `package` under `root` (a package's is its __init__)."""
    root = Path(root) if root is not None else package_root(package)
    files = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imports_of(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The modules among `known` that module `name` (source at `path`) imports, anywhere in its body.

    `from pkg import mod` counts as importing pkg.mod (not pkg); `from pkg import function` as pkg.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return _imports_in(path.read_text(), package, set(known)) - {name}


def _imports_in(source: str, package: str, known: set[str]) -> set[str]:
    """The modules among `known` that `source` imports; relative imports climb from `package`."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).rstrip(".")
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known
            found.update(submodules or {base})
    return found & known


def _package_of(roots: list[str]) -> str:
    packages = {r.split(".")[0] for r in roots} or {PACKAGE}
    if len(packages) != 1:
        raise ValueError(f"roots must be modules of one package; got {sorted(roots)}")
    return packages.pop()


def dependencies(roots: Iterable[str], root: str | os.PathLike | None = None) -> list[str]:
    """The sorted modules that `roots` (modules of one package, found under `root`: default where it is
    imported from) depend on, themselves included, stage rule applied."""
    roots = list(roots)
    package = _package_of(roots)
    files = module_files(package, root)
    graph: dict[str, set[str]] = {}
    todo = [r for r in roots if r in files]
    unknown = [r for r in roots if r not in files]
    if unknown:
        raise ValueError(f"roots: unknown module(s) {unknown}; expected modules of {package!r}")
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        graph[name] = imports_of(name, files[name], files)
        stage = _stage_of(name, package)
        whole_stage = {m for m in files if stage and (m == stage or m.startswith(stage + "."))}
        todo.extend((graph[name] | whole_stage) - seen)
    return sorted(seen)


def _stage_of(name: str, package: str) -> str | None:
    parts = name.split(".")
    if len(parts) >= 2 and parts[0] == package and parts[1] in STAGES:
        return f"{package}.{parts[1]}"
    return None


def code_fingerprint(roots: Iterable[str], root: str | os.PathLike | None = None) -> dict:
    """{"fingerprint": 16 hex over every dependency's source, "modules": {module: 12 hex of its source}}.

    What metrics.json records under "code": a run is stale when its fingerprint differs from the one its
    code has now, and `changed_modules` names why.
    """
    roots = list(roots)
    files = module_files(_package_of(roots), root)
    modules = {
        name: hashlib.sha256(files[name].read_bytes()).hexdigest()[:12]
        for name in dependencies(roots, root)
    }
    text = json.dumps(modules, sort_keys=True)
    return {"fingerprint": hashlib.sha256(text.encode()).hexdigest()[:16], "modules": modules}


def changed_modules(old: dict | None, new: dict) -> list[str]:
    """The modules whose source differs between two `code_fingerprint`s (added or removed ones too)."""
    before = (old or {}).get("modules") or {}
    after = new.get("modules") or {}
    return sorted(m for m in set(before) | set(after) if before.get(m) != after.get(m))


def function_roots(fn, package: str = PACKAGE) -> list[str]:
    """The module(s) whose code a training function runs: its defining module (through functools.partial
    and bound methods) when that is in `package`; a function defined elsewhere (a notebook's, a test's)
    depends on the whole package."""
    while hasattr(fn, "func"):  # functools.partial
        fn = fn.func
    module = getattr(fn, "__module__", None) or ""
    if module == package or module.startswith(package + "."):
        return [module]
    return sorted(module_files(package))


def notebook_roots(path: str | os.PathLike, package: str = PACKAGE) -> list[str]:
    """The package modules a notebook's code cells import (IPython magics and shell lines left out)."""
    cells = json.loads(Path(path).read_text())["cells"]
    known = set(module_files(package))
    roots: set[str] = set()
    for cell in cells:
        if cell.get("cell_type") == "code":
            lines = "".join(cell["source"]).splitlines()
            source = "\n".join(line for line in lines if line.lstrip()[:1] not in ("%", "!"))
            roots |= _imports_in(source, "", known)
    return sorted(roots)


def notebook_fingerprint(path: str | os.PathLike) -> str:
    """Hash of a notebook's code cells and of the drostudy code they import: editing either makes the
    notebook's finished runs stale (drostudy.runner); outputs and markdown cells do not."""
    cells = json.loads(Path(path).read_text())["cells"]
    code = "\n\x00".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    package = code_fingerprint(notebook_roots(path))["fingerprint"]
    return hashlib.sha256(code.encode()).hexdigest()[:16] + "+" + package
