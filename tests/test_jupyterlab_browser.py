"""End to end in a real browser: JupyterLab runs notebook 01 and its widgets redraw the weights figure.

Headless Debian Chromium driven by Playwright (never a downloaded browser). The test starts JupyterLab on a
free loopback port with a token, opens a copy of `01_worst_case_weights.ipynb` (SMOKE on, so the convergence
cells take seconds), runs all cells, moves the radius slider and changes the divergence, and checks the
worst-case weights figure's *data* against `drostudy.weights` for the values the widgets show.
Screenshots go to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from drostudy.weights import worst_case_weights

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = "01_worst_case_weights.ipynb"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = (
    "--no-sandbox --disable-gpu --disable-background-networking "
    "--disable-component-update --disable-sync --no-first-run"
).split()

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not installed (scripts/setup.sh installs it where it runs as root)",
    ),
]

# Read the notebook model of the open notebook: errors and cells not yet executed.
CELL_STATE_JS = """() => {
  const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
  const state = {errors: [], pending: 0};
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    if (!cell.executionCount) state.pending += 1;
    for (let j = 0; j < cell.outputs.length; j++) {
      const out = cell.outputs.get(j).toJSON();
      if (out.output_type === 'error') state.errors.push(`cell ${i}: ${out.ename}: ${out.evalue}`);
    }
  }
  return state;
}"""
# x/y of the trace named "worst-case weights" in the rendered plotly figure, and the figure's title.
WEIGHTS_JS = """() => {
  for (const el of document.querySelectorAll('.js-plotly-plot')) {
    const trace = (el.data || []).find(t => t.name === 'worst-case weights');
    if (trace) return {x: Array.from(trace.x), y: Array.from(trace.y), title: el.layout.title.text};
  }
  return null;
}"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _smoke_copy(folder: Path) -> Path:
    """Copy notebook 01 into `folder` with SMOKE = True appended to its parameters cell."""
    nb = json.loads((REPO / "notebooks" / NOTEBOOK).read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    cell["source"] = (
        "".join(cell["source"]) + "\nSMOKE = True  # the browser test: seconds, not minutes\n"
    )
    (folder / NOTEBOOK).write_text(json.dumps(nb))
    return folder / NOTEBOOK


@pytest.fixture()
def lab(tmp_path):
    """A JupyterLab server on a free loopback port; yields (url, token); shuts it down after."""
    work = tmp_path / "notebooks"
    work.mkdir()
    _smoke_copy(work)
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(
        os.environ,
        DROSTUDY_FIGURES=str(tmp_path / "figures"),
        DROSTUDY_RESULTS=str(tmp_path / "results"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    command = [
        str(Path(sys.executable).parent / "jupyter"),
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={work}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands, read the model
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = open(tmp_path / "lab.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(url, token, server)
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _wait_for_server(url: str, token: str, server: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {server.returncode}")
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer at {url} within {timeout} s")


def _wait_until(page, predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        page.wait_for_timeout(250)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def _all_ran(page) -> dict | None:
    """The cell state once every code cell has run (clicking through a kernel dialog if one shows)."""
    if page.locator(".jp-Dialog").count():
        page.locator(".jp-Dialog").get_by_role("button", name="Select").click()
    state = page.evaluate(CELL_STATE_JS)
    return state if state["pending"] == 0 else None


def _shows(page, divergence: str, radius: float) -> dict | None:
    """The weights figure once its y are the exact worst-case weights of its x (the losses), else None.

    Widgets redraw asynchronously and a slider passes through intermediate values, so the test waits for
    the figure to match what `drostudy.weights` computes for the values the widgets show.
    """
    figure = page.evaluate(WEIGHTS_JS)
    if figure is None:
        return None
    expected = worst_case_weights(torch.tensor(figure["x"], dtype=torch.float64), divergence, radius)
    shown = torch.tensor(figure["y"], dtype=torch.float64)
    return figure if torch.allclose(shown, expected, atol=1e-6) else None


def test_notebook_01_runs_and_its_widgets_redraw_the_weights(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    url, token = lab
    started = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(f"{url}/lab/tree/{NOTEBOOK}?token={token}")
        page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook')")
        # Run only once the notebook's kernel session is up: earlier, JupyterLab asks for a kernel.
        page.evaluate(
            "async () => { await window.jupyterapp.shell.currentWidget.sessionContext.ready; }"
        )
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        try:
            state = _wait_until(page, lambda: _all_ran(page), 150, "all cells to run")
        finally:
            page.screenshot(path=str(tmp_path / "01_after_run_all.png"), full_page=True)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
        assert page.evaluate(CELL_STATE_JS)["errors"] == [], state
        # The notebook's own parameters (tv, radius 0.2) draw the first figure.
        before = _wait_until(page, lambda: _shows(page, "tv", 0.2), 60, "the tv weights at 0.2")

        slider = page.locator(".widget-slider", has_text="radius").first
        for _ in range(8):
            slider.locator(".noUi-handle").press("ArrowRight")
        radius = float(slider.locator(".widget-readout").inner_text())
        assert radius > 0.2
        moved = _wait_until(page, lambda: _shows(page, "tv", radius), 30, f"the tv weights at {radius}")
        assert moved["y"] != before["y"]
        page.screenshot(path=str(tmp_path / "02_radius_moved.png"), full_page=True)

        page.locator(".widget-dropdown", has_text="divergence").locator("select").select_option("kl")
        switched = _wait_until(
            page, lambda: _shows(page, "kl", radius), 30, f"the kl weights at {radius}"
        )
        assert switched["y"] != moved["y"] and "kl" in switched["title"]
        page.screenshot(path=str(tmp_path / "03_divergence_kl.png"), full_page=True)
        assert page.evaluate(CELL_STATE_JS)["errors"] == []
        browser.close()
    print(f"browser test: {time.monotonic() - started:.1f} s in the browser; screenshots in {tmp_path}")
