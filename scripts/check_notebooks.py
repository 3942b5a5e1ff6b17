"""Fail when a notebook under notebooks/ is committed with outputs or execution counts.

Executed notebooks are build output (papermill writes them under runs/); the sources stay stripped so that
diffs stay readable and no result is committed by accident.
"""

import json
import pathlib
import sys


def unstripped(root: pathlib.Path) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        cells = json.loads(path.read_text())["cells"]
        if any(c.get("outputs") or c.get("execution_count") for c in cells if c["cell_type"] == "code"):
            bad.append(str(path))
    return bad


if __name__ == "__main__":
    bad = unstripped(pathlib.Path(__file__).resolve().parent.parent / "notebooks")
    if bad:
        sys.exit(
            "notebooks committed with outputs (strip them: `make lint` does not; use nbstripout "
            "or Kernel > Clear All Outputs):\n  " + "\n  ".join(bad)
        )
    print("notebooks: all stripped")
