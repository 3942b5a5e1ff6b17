"""Progress events of a notebook's runs, the line the study prints from them, and batch-run progress bars."""

import json

import pytest

from drostudy import progress
from drostudy.progress import (
    PROGRESS_ENV,
    NotebookProgress,
    cells_status,
    read_events,
    run_finished,
    runs_planned,
    runs_status,
    tqdm,
)


def test_events_round_trip_and_the_estimate_counts_only_trained_runs(tmp_path, monkeypatch):
    path = tmp_path / "progress.jsonl"
    monkeypatch.setenv(PROGRESS_ENV, str(path))
    runs_planned(4)
    run_finished(tmp_path / "a", 0.0, skipped=True)  # read back from its folder: costs nothing
    run_finished(tmp_path / "b", 10.0, skipped=False)
    events = read_events(path)
    assert [e["event"] for e in events] == ["planned", "run", "run"]
    last = events[-1]["time"]
    done, planned, left = runs_status(events, now=last + 3.0)
    assert (done, planned) == (2, 4)
    assert left == pytest.approx(2 * 10.0 - 3.0)  # two runs to do, the current one 3 s in
    assert runs_status(events[:2], now=last) == (1, 4, None)  # nothing trained yet: no estimate
    assert runs_status(events[1:], now=last) == (2, None, None)  # total unknown: no estimate


def test_nothing_is_written_outside_a_study_and_a_partial_line_waits(tmp_path, monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    runs_planned(3)  # JupyterLab: no file anywhere
    assert list(tmp_path.iterdir()) == []
    path = tmp_path / "progress.jsonl"
    path.write_text(json.dumps({"event": "planned", "runs": 2, "time": 0}) + '\n{"event": "ru')
    assert read_events(path) == [{"event": "planned", "runs": 2, "time": 0}]
    assert read_events(tmp_path / "missing") == []


def test_cells_status_counts_papermills_completed_cells(tmp_path):
    statuses = ["completed", "completed", "running", "pending"]
    cells = [{"metadata": {"papermill": {"status": s}}} for s in statuses]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": cells}))
    assert cells_status(path) == (2, 4)
    path.write_text('{"cells": [')  # caught half-way through a save
    assert cells_status(path) is None


def test_the_study_line_moves_with_cells_and_runs_and_repeats_only_as_a_heartbeat(tmp_path, monkeypatch):
    printed = []
    events, executed = tmp_path / "progress.jsonl", tmp_path / "nb.ipynb"
    watch = NotebookProgress("03_x", "2/5", executed, events, out=lambda line, **_: printed.append(line))
    watch.poll()
    assert printed == ["[2/5 notebooks] 03_x: starting"]
    executed.write_text(
        json.dumps({"cells": [{"metadata": {"papermill": {"status": "completed"}}}] * 2})
    )
    monkeypatch.setenv(PROGRESS_ENV, str(events))
    runs_planned(3)
    run_finished(tmp_path / "a", 120.0, skipped=False)
    watch.poll()
    watch.poll()  # nothing moved: no new line
    assert len(printed) == 2 and printed[-1].startswith("[2/5 notebooks] 03_x: cell 2/2, run 1/3, ~")
    assert printed[-1].endswith(" min left in its runs")
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.0)
    watch.poll()
    assert len(printed) == 3


def test_drostudys_bars_are_off_in_batch_runs_even_in_a_notebook(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not tqdm(range(2)).disable
    assert tqdm(range(2), disable=True).disable
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert tqdm(range(2)).disable and tqdm(range(2), disable=False).disable


@pytest.mark.parametrize(("verbosity", "printer_kept"), [("error", False), ("warning", True)])
def test_trainers_print_no_log_dicts_in_batch_runs(tmp_path, verbosity, printer_kept):
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments
    from transformers.utils import logging

    from drostudy.runs import quiet_in_batch

    previous = logging.get_verbosity()
    logging.set_verbosity(getattr(logging, verbosity.upper()))
    try:
        args = TrainingArguments(output_dir=str(tmp_path), disable_tqdm=True, use_cpu=True, report_to=[])
        trainer = quiet_in_batch(Trainer(model=torch.nn.Linear(2, 1), args=args))
    finally:
        logging.set_verbosity(previous)
    callbacks = {type(c) for c in trainer.callback_handler.callbacks}
    assert (PrinterCallback in callbacks) == printer_kept
