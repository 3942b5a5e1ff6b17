"""Where figures go and how they are written: offline HTML and PNG files, listed in the figures' README.

`save_figure(fig, "01_worst_case_weights_weights")` writes figures/<name>.html and figures/<name>.png
(drostudy.plotting re-exports it beside the palette and the charts).

HTML: every page references one shared `plotly.min.js` written beside the figures (plotly's
include_plotlyjs="directory"). Self-contained pages would carry the same 4.6 MB of JavaScript each (a
notebook saves several figures, the study dozens); the shared file keeps figures/ small and still
viewable without a network, as long as the folder is kept together. The CDN option is never used: the
study machines are offline.

PNG: kaleido 1.x drives a system Chromium (Debian's `chromium`, found on the PATH). drostudy never asks
kaleido or plotly to download a browser. Without a working Chromium the PNGs are skipped and one warning
per process says why; DROSTUDY_NO_PNG=1 skips them on purpose.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import warnings
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from drostudy import figure_index
from drostudy.io import atomic_write_text

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^\d{2}_[a-z0-9]+(?:_[a-z0-9]+)*$")
PLOTLYJS_NAME = "plotly.min.js"
# Default PNG size: readable when pasted into a paper or a slide at half width.
PNG_WIDTH, PNG_HEIGHT, PNG_SCALE = 900, 520, 2
_PNG_PROBE_TIMEOUT_S = 60.0


def figures_dir(figures_dir: str | os.PathLike | None = None) -> Path:
    """Where figures go: the argument, else $DROSTUDY_FIGURES, else <repo>/figures (created)."""
    root = figures_dir or os.environ.get("DROSTUDY_FIGURES")
    path = Path(root) if root else Path(__file__).resolve().parent.parent / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


_figures_dir = figures_dir  # save_figure's argument shadows the function's name


def save_figure(
    fig: go.Figure, name: str, figures_dir: str | os.PathLike | None = None
) -> dict[str, Path | None]:
    """Write `fig` to <figures>/<name>.html (offline) and <figures>/<name>.png; return both paths.

    The figure is registered in <figures>/README.md with its title and notebook cell (drostudy.figure_index).
    `name` is `NN_slug_what` (NN the notebook's number). "png" is None when PNG export is unavailable
    (the reason is warned once per process).
    """
    if not NAME_PATTERN.match(name):
        raise ValueError(f"figure name {name!r} must look like 'NN_slug_what' (lower case, digits, _)")
    out = _figures_dir(figures_dir)
    fig = go.Figure(fig)  # a FigureWidget or a dict becomes a plain figure to export
    _ensure_plotlyjs(out)
    html_path = out / f"{name}.html"
    atomic_write_text(html_path, fig.to_html(include_plotlyjs="directory", full_html=True))
    png_path = out / f"{name}.png"
    if not _png_available():
        figure_index.register(name, fig.layout.title.text or "", out)
        return {"html": html_path, "png": None}
    tmp = out / f".{name}.tmp.png"
    with warnings.catch_warnings():
        # plotly passes its (empty) kaleido options to the running server, which warns that it ignores them
        warnings.filterwarnings("ignore", message="The kopts argument is ignored")
        # a figure that sets its own size (tall facet grids) keeps it; others get the default
        size = dict(width=fig.layout.width or PNG_WIDTH, height=fig.layout.height or PNG_HEIGHT)
        fig.write_image(tmp, **size, scale=PNG_SCALE)
    os.replace(tmp, png_path)
    figure_index.register(name, fig.layout.title.text or "", out)  # after the PNG: the index lists it
    return {"html": html_path, "png": png_path}


def _ensure_plotlyjs(out: Path) -> None:
    """Write the installed plotly's plotly.js beside the figures unless that exact file is there already.

    Compared in full, once per process for each state of the file (its size and modification time): a
    bundle left by another plotly version would silently render the new figures with the old library.
    """
    path = out / PLOTLYJS_NAME
    if not _is_current_bundle(path, _file_state(path)):
        atomic_write_text(path, _plotlyjs_bundle())


def _file_state(path: Path) -> tuple[int, int] | None:
    """(size, modification time in ns) of `path`, None when there is no such file."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


@functools.cache
def _is_current_bundle(path: Path, state: tuple[int, int] | None) -> bool:
    """Whether the file at `path`, in `state` (the cache key: a rewritten file is compared again), holds
    the installed plotly's plotly.js."""
    return state is not None and path.read_text() == _plotlyjs_bundle()


@functools.cache
def _plotlyjs_bundle() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


@functools.cache
def png_unavailable_reason() -> str:
    """'' when PNG export works in this process, otherwise why not (probes Chromium once, warns once)."""
    reason = _probe_png()
    if reason:
        message = f"drostudy.figure_files: PNG export skipped ({reason}); HTML files are written"
        logger.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return reason


def _png_available() -> bool:
    return png_unavailable_reason() == ""


def _probe_png() -> str:
    """Start kaleido's sync server once (later exports cost ~0.15 s instead of a browser start each)."""
    if os.environ.get("DROSTUDY_NO_PNG", "") not in ("", "0"):
        return "DROSTUDY_NO_PNG is set"
    try:
        import kaleido
        from choreographer.browsers.chromium import Chromium
    except ImportError as err:
        return f"kaleido is not installed: {err}"
    # skip_local: a browser kaleido once downloaded does not count; only a system one is used.
    if Chromium.find_browser(skip_local=True) is None and not os.environ.get("BROWSER_PATH"):
        return "no Chromium on the PATH; install Debian's `chromium` (drostudy never downloads one)"
    # mathjax=False: the default loads MathJax from a CDN, which the offline machines cannot reach.
    kaleido.start_sync_server(mathjax=False, silence_warnings=True)
    # A dead browser would make the server's queue wait forever: probe in a thread with a deadline.
    result: dict[str, BaseException | bytes] = {}
    probe = threading.Thread(target=_render_probe, args=(result,), daemon=True)
    probe.start()
    probe.join(_PNG_PROBE_TIMEOUT_S)
    if isinstance(result.get("out"), bytes):
        return ""
    if "out" not in result:
        return f"Chromium did not render a test figure within {_PNG_PROBE_TIMEOUT_S:.0f} s"
    kaleido.stop_sync_server(silence_warnings=True)
    return f"kaleido failed: {type(result['out']).__name__}: {result['out']}"


def _render_probe(result: dict) -> None:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The kopts argument is ignored")
            result["out"] = pio.to_image(go.Figure(), format="png", width=10, height=10)
    except Exception as err:  # noqa: BLE001 - any failure means "no PNG", with the reason reported
        result["out"] = err
