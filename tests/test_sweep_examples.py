"""Every `python -m drostudy` example of `sweep --help`, the README and its docs pages runs as written (at
SMOKE size); the table of a notebook sweep holds the notebook's numbers; figures/README.md points to the
cell."""

import json
import re
import shlex
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from drostudy.__main__ import main
from drostudy.analysis import results
from drostudy.plotting import save_figure
from drostudy.runner import sweep
from drostudy.runner.tasks import Task

REPO = Path(__file__).resolve().parents[1]
# What a test appends to an example so that it runs in seconds: the notebooks' SMOKE switch and one grid
# point of a sweep (its whole grid is still checked), tiny models and sizes for a training command.
TINY_RM = {"model": "tiny-bert", "n_train": "16", "n_eval": "8", "batch_size": "8"}
TINY_DPO = {"model": "tiny-llama", "n_train": "4", "steps": "1", "batch_size": "2", "n_eval": "2"}
TINY_DPO |= {"n_generate": "1", "max_new_tokens": "2", "lora_layers": "1"}
SMALL = {
    "sweep --notebook": ["--param", "SMOKE=True", "--limit", "1"],
    "sweep --grid": ["--param", "SMOKE=True", "--limit", "1"],
    "sweep --command rm": [
        *(f for k, v in TINY_RM.items() for f in ("--param", f"{k}={v}")),
        "--limit",
        "1",
    ],
    "rm": [f for k, v in TINY_RM.items() for f in (f"--{k.replace('_', '-')}", v)],
    "dpo": [f for k, v in TINY_DPO.items() for f in (f"--{k.replace('_', '-')}", v)],
}


def commands(text: str) -> list[str]:
    """The `python -m drostudy ...` lines of `text` (environment assignments before it left out),
    backslash continuations joined, `# comments` cut."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = (line.split(" #")[0].strip() for line in joined.splitlines())
    lines = (re.sub(r"^(\w+=\S*\s+)+", "", line) for line in lines)
    return [line for line in lines if line.startswith("python -m drostudy ")]


# The pages whose ```bash blocks hold `python -m drostudy` examples: the README and the docs it links.
EXAMPLE_PAGES = ["README.md", "docs/study.md", "docs/dropin.md"]


def readme_commands() -> list[str]:
    pages = [(REPO / page).read_text() for page in EXAMPLE_PAGES]
    blocks = [b for text in pages for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]
    return [c for block in blocks for c in commands(block)]


EXAMPLES = list(dict.fromkeys([*commands(sweep.__doc__), *readme_commands()]))


def small(argv: list[str], tmp_path: Path) -> list[str]:
    """`argv` with the SMALL flags of its kind appended and a training command's --out under tmp_path."""
    kind = " ".join(argv[:2]) if argv[0] == "sweep" else argv[0]
    kind = "sweep --command rm" if argv[:3] == ["sweep", "--command", "rm"] else kind
    assert kind in SMALL, f"an example of a new kind ({kind}): give it a SMOKE size in SMALL"
    argv = [*argv]
    if "--out" in argv:
        argv[argv.index("--out") + 1] = str(tmp_path / "out")
    if "--dataset" in argv:  # the user's own pairs: a small file of that name, in TRL's columns
        path = tmp_path / argv[argv.index("--dataset") + 1]
        rows = [
            {"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": str(i)} for i in range(8)
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        argv[argv.index("--dataset") + 1] = str(path)
    return [*argv, *SMALL[kind]]


def test_examples_are_found():
    assert len(commands(sweep.__doc__)) >= 4 and "--grid default" in commands(sweep.__doc__)[0]
    assert any("sweep" in c for c in readme_commands()), "the README and docs/study.md show no sweep"


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES)
def test_example_runs_as_written(example, tmp_path, monkeypatch, notebook_env):
    for name, value in notebook_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(REPO)  # the examples name notebooks as a user in the repository does
    argv = shlex.split(example)[3:]
    assert main(small(argv, tmp_path)) == 0
    if argv[0] != "sweep":
        assert (tmp_path / "out" / "metrics.json").exists()
        return
    sweep_dir = next(Path(notebook_env["DROSTUDY_RUNS"]).glob("*/results.parquet")).parent
    table = pd.read_parquet(sweep_dir / "results.parquet")
    assert (table["status"] == "ok").all()
    numbers = table.dropna(subset=["value"])
    assert len(numbers) and numbers["metric"].notna().all()  # the table holds the run's numbers
    if "--notebook" in argv or "--grid" in argv:
        check_figure_readme(next(sweep_dir.glob("*/figures")), next(sweep_dir.glob("*/*.ipynb")))
    if (
        "--grid" in argv
    ):  # notebook 05 reads the table as a stage of its own and compares it with ordinary
        df = results.collect(str(Path(notebook_env["DROSTUDY_RUNS"]) / "*" / "results.parquet"))
        df = results.select_metric(df, {"rm": "accuracy"}).dropna(subset=["value"])
        df = df.assign(stage=results.stage_per_sweep(df))
        assert set(df["stage"]) == {f"rm @{sweep_dir.name}"}
        (comparison,) = results.compare_to_ordinary(df, dict.fromkeys(df["stage"], "accuracy"))
        # the grid fixes HEADLINE_SEEDS, which SMOKE does not override (a parameter set beats the mode's
        # value); each seed's ordinary run counts once across the grid's runs
        fixed = sweep.PRESETS["default"]["fixed"]["HEADLINE_SEEDS"]
        assert comparison["ordinary"]["seeds"] == fixed


def check_figure_readme(figures: Path, executed: Path):
    """Each figure of the run is listed with the `In [N]` of a cell of the executed notebook that saves it."""
    readme = (figures / "README.md").read_text()
    cells = {
        c.get("execution_count"): "".join(c["source"]) for c in json.loads(executed.read_text())["cells"]
    }
    for html in figures.glob("[0-9][0-9]_*.html"):
        line = next(line for line in readme.splitlines() if f"[{html.name}]" in line)
        cell = int(re.search(r"In \[(\d+)\]", line).group(1))
        assert "save_figure" in cells[cell], (html.name, cells[cell])


def test_table_keeps_a_shared_run_once_and_reads_a_scalar_record(tmp_path):
    """Two grid points of notebook 02 record the same ordinary run: the table keeps one copy (else 05
    would count it as two seeds); a notebook that records scalars (01) gives one row per number."""
    ordinary = {"stage": "rm", "method": "ordinary", "config": {"seed": 0, "radius": 0.0}}
    tasks = []
    for radius in (0.1, 0.2):
        robust = {"stage": "rm", "method": "robust", "config": {"seed": 0, "radius": radius}}
        runs = [
            {**m, "per_domain": {"math": {"accuracy": 0.5 + m["config"]["radius"]}}}
            for m in (ordinary, robust)
        ]
        run_dir = tmp_path / f"RADIUS={radius}"
        (run_dir / "results").mkdir(parents=True)
        (run_dir / "results" / "02_x.json").write_text(json.dumps({"runs": runs}))
        tasks.append(Task("notebook", "02_x.ipynb", {"RADIUS": radius}, run_dir))
    table = sweep.results_table(tasks, [{"run_id": t.run_dir.name, "status": "ok"} for t in tasks])
    assert sorted(table["method"]) == ["ordinary", "robust", "robust"]
    assert sorted(table["value"]) == pytest.approx([0.5, 0.6, 0.7])

    record = {
        "parameters": {"RADIUS": 0.2},
        "weights": {"ess": 3.5},
        "gap": {"tv": {"64": 0.1}},
        "text": "x",
    }
    rows = results.scalar_rows(record, "01_weights", "r")
    assert {r["metric"]: r["value"] for r in rows} == {"weights/ess": 3.5, "gap/tv/64": 0.1}


def test_figure_readme_outside_a_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("DROSTUDY_NO_PNG", "1")
    save_figure(go.Figure(layout_title_text="Weights <br>per loss"), "01_worst_case_weights_t", tmp_path)
    readme = (tmp_path / "README.md").read_text()
    question = "01 · What do the worst-case weights look like"
    assert f"## {question}" in readme and "notebooks/01_worst_case_weights.ipynb" in readme
    assert (
        "| [01_worst_case_weights_t.html](01_worst_case_weights_t.html) | Weights per loss |" in readme
    )
    (tmp_path / "01_worst_case_weights_t.html").unlink()  # a figure deleted since is no longer listed
    save_figure(go.Figure(), "02_reward_model_robustness_t", tmp_path)
    assert "01_worst_case_weights_t" not in (tmp_path / "README.md").read_text()


def test_interrupted_sweep_keeps_its_finished_runs_in_the_table(tmp_path, monkeypatch):
    """The table is rewritten after every run: Ctrl-C during the second run leaves the first one in it."""
    import drostudy.runner.tasks as runner_tasks
    from drostudy.io import atomic_write_json

    notebook = tmp_path / "99_toy.ipynb"
    cell = {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "x = 1", "outputs": []}
    notebook.write_text(
        json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 4})
    )

    def run_task(task, timeout=None, env=None):  # the first run finishes, the second is interrupted
        if task.params["x"] == 2:
            raise KeyboardInterrupt
        metrics = {"stage": "toy", "config": {"x": 1}, "per_domain": {"a": {"accuracy": 0.25}}}
        atomic_write_json(task.run_dir / "results" / "99_toy.json", {"runs": [metrics]})
        record = {"run_id": task.run_dir.name, "status": "ok", "wall_s": 1.0, "run_s": 1.0}
        atomic_write_json(task.run_dir / "done.json", {**record, "params": task.params})
        return record

    monkeypatch.setattr(runner_tasks, "run_task", run_task)
    with pytest.raises(KeyboardInterrupt):
        main(["sweep", "--notebook", str(notebook), "--param", "x=1,2", "--runs-dir", str(tmp_path)])
    table = pd.read_parquet(tmp_path / "99_toy" / "results.parquet")
    assert list(table["run_id"]) == ["x=1"] and table["value"].tolist() == [0.25]
