"""Headless notebooks: a notebook through papermill in the venv's own `python3` kernel, its parameters
cell read and checked, what its cells printed and how long they ran.

jupyter_client starts the `python3` kernel with the interpreter that runs papermill (a kernel spec whose
command is `python` is rewritten to sys.executable), so running this module from the venv runs the notebook
in the venv; no kernel has to be registered. The kernel inherits this process's environment: HF_HUB_OFFLINE,
DROSTUDY_FIGURES (where figures go), DROSTUDY_RESULTS (where results/NN_slug.json goes).

`python -m drostudy.runner.notebooks IN.ipynb OUT.ipynb --parameters '{"SMOKE": true}'` is what a sweep
worker runs (drostudy.runner.tasks starts it, one process per run).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import sys
from pathlib import Path

from drostudy.io import notebook_paths, notebooks_dir  # noqa: F401 (this module's API too)

KERNEL = "python3"


def notebook_parameters(path: str | os.PathLike) -> dict:
    """Name -> default value of each variable the notebook's `parameters`-tagged cell assigns.

    A default that is not a literal (an expression) maps to its source text. No parameters cell: {}.
    """
    cells = json.loads(Path(path).read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    params = {}
    for cell in tagged[:1]:  # papermill uses the first tagged cell
        source = "".join(cell["source"])
        for node in ast.parse(source).body:
            target = node.targets[-1] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            if isinstance(target, ast.Name) and getattr(node, "value", None) is not None:
                params[target.id] = _literal(ast.get_source_segment(source, node.value))
    return params


def _literal(source: str):
    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return source


def check_parameters(path: str | os.PathLike, parameters: dict) -> None:
    """Raise ValueError when `parameters` names a variable that the notebook's parameters cell lacks.

    papermill would inject it silently and the notebook would ignore it: a typo would go unnoticed.
    """
    known = notebook_parameters(path)
    for name in parameters:
        if name not in known:
            raise ValueError(
                f"unknown parameter {name!r} for {Path(path).name}; expected one of {sorted(known)}"
            )


@contextlib.contextmanager
def _environment(env: dict | None):
    """Temporarily set environment variables (the kernel copies os.environ when it starts)."""
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute_notebook(
    path: str | os.PathLike,
    out_path: str | os.PathLike,
    parameters: dict | None = None,
    cwd: str | os.PathLike | None = None,
    timeout: float | None = None,
    env: dict | None = None,
    progress_bar: bool = True,
) -> Path:
    """Execute `path` with `parameters` into `out_path` (written even when a cell fails); return out_path.

    cwd: the kernel's working directory (default: the notebook's folder, as in JupyterLab); timeout: seconds
    per cell (None: no limit); env: extra environment variables for the kernel (this process's environment
    is set while the kernel starts, so do not call this from several threads at once). A failing cell raises
    papermill.PapermillExecutionError after the executed notebook, with its traceback, is saved.
    """
    import papermill

    path, out_path = Path(path), Path(out_path)
    parameters = dict(parameters or {})
    check_parameters(path, parameters)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with _environment(env):
        papermill.execute_notebook(
            str(path),
            str(out_path),
            parameters=parameters,
            kernel_name=KERNEL,
            language="python",
            cwd=str(cwd if cwd is not None else path.parent),
            execution_timeout=timeout,
            progress_bar=progress_bar,
            report_mode=False,
        )
    return out_path


def executed_seconds(out_path: str | os.PathLike) -> float:
    """Seconds the cells of an executed notebook ran (papermill's per-cell durations, summed)."""
    cells = json.loads(Path(out_path).read_text())["cells"]
    return float(sum((c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0) for c in cells))


def printed_text(out_path: str | os.PathLike) -> str:
    """Everything the cells of an executed notebook printed (their stream outputs), in cell order."""
    cells = json.loads(Path(out_path).read_text())["cells"]
    return "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))


def displayed_markdown(out_path: str | os.PathLike) -> list[str]:
    """The Markdown the cells of an executed notebook displayed (IPython.display.Markdown), in cell order."""
    cells = json.loads(Path(out_path).read_text())["cells"]
    outputs = [o for c in cells for o in c.get("outputs", [])]
    return ["".join(o["data"]["text/markdown"]) for o in outputs if "text/markdown" in o.get("data", {})]


def main(argv: list[str] | None = None) -> int:
    """Entry point of a sweep worker process (one notebook run)."""
    # jsonschema (via nbformat) imports rfc3987_syntax when installed, which builds a grammar at import:
    # 3-5 s per run of a sweep, for an IRI format check that notebook validation never uses.
    sys.modules.setdefault("rfc3987_syntax", None)
    parser = argparse.ArgumentParser(description="execute one notebook with papermill")
    parser.add_argument("notebook")
    parser.add_argument("out")
    parser.add_argument("--parameters", default="{}", help="JSON object of papermill parameters")
    parser.add_argument("--cwd", default=None)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per cell")
    args = parser.parse_args(argv)
    execute_notebook(args.notebook, args.out, json.loads(args.parameters), args.cwd, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
