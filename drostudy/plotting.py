"""Figures for every notebook: one look, one colour per method, and offline HTML + PNG files.

`save_figure(fig, "01_worst_case_weights_weights")` writes figures/<name>.html and figures/<name>.png.

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

import logging
import os
import re
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from drostudy import figure_index
from drostudy.io import atomic_write_text

logger = logging.getLogger(__name__)

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies.
OKABE_ITO = (
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#0072B2",  # blue
    "#F0E442",  # yellow (weak on white: used last)
    "#000000",  # black
)
# One colour per method in every notebook: the ordinary (non-robust) baseline is always black, each
# divergence keeps its colour whether it appears as a ball, a penalty or a training method. Peers reuse
# the palette's remaining colours plus grey.
METHOD_COLORS = {
    "ordinary": "#000000",
    "tv": "#E69F00",
    "kl": "#56B4E9",
    "chi2": "#009E73",
    "cvar": "#D55E00",
    "group": "#CC79A7",
    "dr_dpo": "#0072B2",
    "kldpo": "#F0E442",
    "wdpo": "#999999",
    "rdpo": "#7F7F7F",
}
# Peers that share a hue with another method are told apart by the line dash.
METHOD_DASH = {"rdpo": "dash", "kldpo": "dashdot"}

FONT_SIZE = 15
NAME_PATTERN = re.compile(r"^\d{2}_[a-z0-9]+(?:_[a-z0-9]+)*$")
PLOTLYJS_NAME = "plotly.min.js"
# Default PNG size: readable when pasted into a paper or a slide at half width.
PNG_WIDTH, PNG_HEIGHT, PNG_SCALE = 900, 520, 2
_PNG_PROBE_TIMEOUT_S = 60.0

pio.templates["drostudy"] = go.layout.Template(
    layout=dict(
        font=dict(size=FONT_SIZE, family="DejaVu Sans, Arial, sans-serif"),
        title=dict(font=dict(size=FONT_SIZE + 3), x=0.02, xanchor="left"),
        colorway=list(OKABE_ITO),
        legend=dict(font=dict(size=FONT_SIZE - 1)),
        margin=dict(l=70, r=30, t=70, b=60),
    )
)
TEMPLATE = "plotly_white+drostudy"


def set_theme() -> None:
    """Make the drostudy template the default for every plotly figure made afterwards."""
    pio.templates.default = TEMPLATE


def method_color(method: str) -> str:
    """The fixed colour of `method` (a divergence or a training method), e.g. "tv" -> orange."""
    key = _method_key(method)
    if key not in METHOD_COLORS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHOD_COLORS)}")
    return METHOD_COLORS[key]


def color_map(values: Sequence[str]) -> dict[str, str]:
    """Colours for the distinct `values`: the method colours when all are methods; otherwise the ordinary
    baseline keeps its black and every other value takes the next Okabe-Ito colour (black skipped)."""
    distinct = list(dict.fromkeys(str(v) for v in values))
    if all(_method_key(v) in METHOD_COLORS for v in distinct):
        return {v: method_color(v) for v in distinct}
    baseline = METHOD_COLORS["ordinary"]
    cycle = [c for c in OKABE_ITO if c != baseline]
    others = [v for v in distinct if _method_key(v) != "ordinary"]
    colors = {v: cycle[i % len(cycle)] for i, v in enumerate(others)}
    return {v: colors.get(v, baseline) for v in distinct}


def _method_key(value: str) -> str:
    return value.lower().replace("-", "_").replace(" ", "_")


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


_CHECKED_DIRS: set[Path] = set()


def _ensure_plotlyjs(out: Path) -> None:
    """Write the installed plotly's plotly.js beside the figures unless that exact file is there already.

    Compared in full (once per folder and process): a bundle left by another plotly version would
    silently render the new figures with the old library.
    """
    path = out / PLOTLYJS_NAME
    if path in _CHECKED_DIRS and path.exists():
        return
    bundle = _plotlyjs_bundle()
    if not (path.exists() and path.read_text() == bundle):
        atomic_write_text(path, bundle)
    _CHECKED_DIRS.add(path)


_BUNDLE: list[str] = []


def _plotlyjs_bundle() -> str:
    if not _BUNDLE:
        from plotly.offline import get_plotlyjs

        _BUNDLE.append(get_plotlyjs())
    return _BUNDLE[0]


# None: not probed yet; "": PNG export works; otherwise the reason it does not.
_PNG_STATE: dict[str, str | None] = {"reason": None}


def png_unavailable_reason() -> str:
    """'' when PNG export works in this process, otherwise why not (probes Chromium once)."""
    if _PNG_STATE["reason"] is None:
        _PNG_STATE["reason"] = _probe_png()
        if _PNG_STATE["reason"]:
            message = (
                f"drostudy.plotting: PNG export skipped ({_PNG_STATE['reason']}); HTML files are written"
            )
            logger.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
    return _PNG_STATE["reason"]


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


def interval_error(mean: pd.Series, low: pd.Series, high: pd.Series) -> dict:
    """plotly's `error_y` for an interval [low, high] around `mean` (asymmetric, in data units)."""
    return dict(
        type="data",
        symmetric=False,
        array=(high - mean).tolist(),
        arrayminus=(mean - low).tolist(),
    )


def add_gain_line(fig: go.Figure, part: pd.DataFrame, x: str, name: str, color: str, **scatter) -> None:
    """Add to `fig` a line of paired gains `part.mean_diff` against `part[x]` with their 95% intervals
    (columns ci_low, ci_high) as error bars; `scatter` passes on to add_scatter (row, col, legendgroup...)."""
    error = interval_error(part.mean_diff, part.ci_low, part.ci_high)
    fig.add_scatter(
        x=part[x],
        y=part.mean_diff,
        error_y=error,
        mode="lines+markers",
        name=name,
        line=dict(color=color),
        **scatter,
    )


def bar_with_ci(
    df: pd.DataFrame,
    x: str,
    y: str,
    color: str | None = None,
    ci_low: str | None = None,
    ci_high: str | None = None,
    title: str | None = None,
    x_title: str | None = None,
    y_title: str | None = None,
) -> go.Figure:
    """Grouped bars of `y` per `x` (one bar group per `color` value), error bars from [ci_low, ci_high].

    `df` is tidy: one row per bar. Colours follow METHOD_COLORS when `color` holds method names.
    """
    for col in (x, y, color, ci_low, ci_high):
        if col is not None and col not in df.columns:
            raise ValueError(f"column {col!r} not in df; expected one of {list(df.columns)}")
    fig = go.Figure()
    groups = [(None, df)] if color is None else list(df.groupby(color, sort=False))
    colors = color_map([g for g, _ in groups]) if color is not None else {}
    for key, part in groups:
        error = None
        if ci_low is not None and ci_high is not None:
            error = interval_error(part[y], part[ci_low], part[ci_high])
        name = None if key is None else str(key)
        fig.add_bar(
            x=part[x], y=part[y], name=name, error_y=error, marker_color=colors.get(name, OKABE_ITO[0])
        )
    fig.update_layout(template=TEMPLATE, barmode="group", title=title, showlegend=color is not None)
    fig.update_xaxes(title=x_title or x)
    fig.update_yaxes(title=y_title or y)
    return fig


def line_vs_radius(
    df: pd.DataFrame,
    y: str,
    method: str = "divergence",
    radius: str = "radius",
    title: str | None = None,
    y_title: str | None = None,
    x_title: str = "radius (ball size; for cvar the tail fraction alpha)",
    log_y: bool = False,
) -> go.Figure:
    """One line of `y` against `radius` per `method`, in the method's fixed colour and dash."""
    for col in (y, method, radius):
        if col not in df.columns:
            raise ValueError(f"column {col!r} not in df; expected one of {list(df.columns)}")
    fig = go.Figure()
    colors = color_map(df[method].unique())
    for key, part in df.groupby(method, sort=False):
        part = part.sort_values(radius)
        line = dict(color=colors[str(key)], dash=METHOD_DASH.get(str(key), "solid"), width=2.5)
        fig.add_scatter(x=part[radius], y=part[y], mode="lines+markers", name=str(key), line=line)
    fig.update_layout(template=TEMPLATE, title=title)
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title or y, type="log" if log_y else "linear")
    return fig
