"""Figures: offline HTML beside one shared plotly.js, PNG via a system Chromium or one clear warning, the palette."""

import shutil
import warnings

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from drostudy import figure_files, plotting
from drostudy.toy import explore
from drostudy.weights import DIVERGENCES


@pytest.fixture
def fresh_png_state():
    """Each test probes PNG export anew (the probe result is cached per process)."""
    figure_files.png_unavailable_reason.cache_clear()
    yield
    figure_files.png_unavailable_reason.cache_clear()


def test_html_is_offline_and_shares_one_plotly_js(tmp_path, monkeypatch, fresh_png_state):
    monkeypatch.setenv("DROSTUDY_NO_PNG", "1")
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 2]))
    with pytest.warns(RuntimeWarning, match="PNG export skipped"):
        first = plotting.save_figure(fig, "01_test_first", tmp_path)
    second = plotting.save_figure(fig, "01_test_second", tmp_path)  # no second warning
    assert first["png"] is None and second["png"] is None
    for paths in (first, second):
        html = paths["html"].read_text()
        assert 'src="plotly.min.js"' in html
        assert "cdn" not in html.lower()  # no network needed to view
    bundle = (tmp_path / "plotly.min.js").read_text()
    assert len(bundle) > 1_000_000 and "plotly" in bundle[:2000].lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".index",  # drostudy.figure_index: what README.md lists
        "01_test_first.html",
        "01_test_second.html",
        "README.md",
        "plotly.min.js",
    ]


def test_a_stale_plotly_js_is_replaced(tmp_path, monkeypatch, fresh_png_state):
    monkeypatch.setenv("DROSTUDY_NO_PNG", "1")
    (tmp_path / "plotly.min.js").write_text("/* an old plotly */")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plotting.save_figure(go.Figure(), "01_test_stale", tmp_path)
    assert (tmp_path / "plotly.min.js").read_text() == figure_files._plotlyjs_bundle()


def test_figures_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DROSTUDY_FIGURES", str(tmp_path / "elsewhere"))
    assert plotting.figures_dir() == tmp_path / "elsewhere" and (tmp_path / "elsewhere").is_dir()
    assert plotting.figures_dir(tmp_path / "arg") == tmp_path / "arg"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no system Chromium: PNG export is skipped")
def test_png_export_with_the_system_chromium(tmp_path, monkeypatch, fresh_png_state):
    monkeypatch.delenv("DROSTUDY_NO_PNG", raising=False)
    paths = plotting.save_figure(go.Figure(go.Bar(x=["a"], y=[1])), "01_test_png", tmp_path)
    assert paths["png"] == tmp_path / "01_test_png.png"
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp.png"))
    assert png_size(paths["png"]) == (figure_files.PNG_WIDTH * 2, figure_files.PNG_HEIGHT * 2)  # scale 2
    tall = go.Figure(go.Bar(x=["a"], y=[1]), layout=dict(height=700))
    assert png_size(plotting.save_figure(tall, "01_test_tall", tmp_path)["png"]) == (
        figure_files.PNG_WIDTH * 2,
        1400,
    )


def png_size(path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    header = path.read_bytes()[16:24]
    return int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")


def test_png_is_skipped_once_without_a_browser(tmp_path, monkeypatch, fresh_png_state):
    monkeypatch.delenv("DROSTUDY_NO_PNG", raising=False)
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing to find
    from choreographer.browsers.chromium import Chromium

    monkeypatch.setattr(Chromium, "find_browser", classmethod(lambda cls, **kw: None))
    with pytest.warns(RuntimeWarning, match="no Chromium on the PATH"):
        assert plotting.save_figure(go.Figure(), "01_test_nobrowser", tmp_path)["png"] is None
    assert (tmp_path / "01_test_nobrowser.html").exists()


@pytest.mark.parametrize("name", ["weights", "1_x", "01-x", "01_X", "01_x.png"])
def test_bad_figure_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="NN_slug_what"):
        plotting.save_figure(go.Figure(), name, tmp_path)


def test_one_colour_per_method_and_the_palette_is_colour_blind_safe():
    assert len({plotting.method_color(d) for d in DIVERGENCES}) == len(DIVERGENCES)
    assert all(plotting.method_color(d) in plotting.OKABE_ITO for d in DIVERGENCES)
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        plotting.method_color("magic")
    assert plotting.color_map(["chat", "safety"]) == {
        "chat": plotting.OKABE_ITO[0],
        "safety": plotting.OKABE_ITO[1],
    }
    # labels that are not all method names: the baseline stays black, the others never take black
    mixed = plotting.color_map(["robust tv 0.2", "ordinary", "group tv 0.2", *"abcdefg"])
    assert mixed["ordinary"] == plotting.METHOD_COLORS["ordinary"]
    others = [c for k, c in mixed.items() if k != "ordinary"]
    assert plotting.METHOD_COLORS["ordinary"] not in others
    assert len(set(others[:7])) == 7  # distinct until the palette runs out


def test_bar_with_ci_and_line_vs_radius():
    df = pd.DataFrame(
        {
            "domain": ["chat", "chat", "math", "math"],
            "method": ["ordinary", "tv", "ordinary", "tv"],
            "accuracy": [0.7, 0.72, 0.5, 0.58],
            "lo": [0.65, 0.7, 0.45, 0.5],
            "hi": [0.75, 0.74, 0.55, 0.6],
        }
    )
    fig = plotting.bar_with_ci(df, "domain", "accuracy", "method", "lo", "hi", y_title="accuracy")
    tv = next(t for t in fig.data if t.name == "tv")
    assert tv.marker.color == plotting.METHOD_COLORS["tv"]
    assert list(tv.error_y.array) == pytest.approx([0.02, 0.02])
    assert list(tv.error_y.arrayminus) == pytest.approx([0.02, 0.08])
    with pytest.raises(ValueError, match="column 'nope'"):
        plotting.bar_with_ci(df, "domain", "nope")
    sweep = pd.DataFrame({"divergence": ["kl"] * 3, "radius": [0.2, 0.0, 0.1], "value": [3, 1, 2]})
    fig = plotting.line_vs_radius(sweep, "value", log_y=True)
    assert list(fig.data[0].x) == [0.0, 0.1, 0.2] and fig.layout.yaxis.type == "log"


def test_explorer_redraws_the_weights_figure_in_place():
    import ipywidgets

    ui, figures = explore.build_explorer("tv", 0.2, 1.0, 32, "lognormal", 0)
    rows = [c for c in ui.children if isinstance(c, ipywidgets.HBox)]
    widgets = {w.description: w for row in rows for w in row.children}
    weights = figures["weights"]
    assert weights in ui.children  # displayed as a FigureWidget: the browser sees it update in place

    def trace():
        return next(t for t in weights.data if t.name == "worst-case weights")

    assert sum(trace().y) == pytest.approx(1.0) and max(trace().y) == pytest.approx(0.2 + 1 / 32)
    widgets["radius"].value = 0.5
    assert max(trace().y) == pytest.approx(0.5 + 1 / 32)  # tv moves `radius` onto the largest loss
    widgets["divergence"].value = "cvar"  # radius 0.5 is alpha: the worst half gets 2/n each
    assert max(trace().y) == pytest.approx(2 / 32) and widgets["radius"].min > 0
    old_value_figure = figures["value"]
    widgets["examples"].value = 40
    assert len(trace().y) == 40 and sum(trace().y) == pytest.approx(1.0)
    assert figures["value"] is not old_value_figure  # new losses: the sweeps are redrawn
    shown = [c.outputs[0]["data"] for c in ui.children if isinstance(c, ipywidgets.Output)]
    assert [b["application/vnd.plotly.v1+json"]["layout"]["title"]["text"] for b in shown] == [
        "robust value against the radius",
        "effective sample size against the radius",
    ]
    losses = explore.sample_losses(40, "lognormal", 0)
    assert list(trace().x) == pytest.approx(sorted(losses.tolist()))


def test_radius_sweep_is_monotone_and_starts_at_the_mean():
    losses = explore.sample_losses(50, "bimodal", 3)
    sweep = explore.radius_sweep(losses, num=12)
    for divergence, part in sweep.groupby("divergence"):
        values = part.sort_values("radius")["value"].to_numpy()
        if divergence == "cvar":
            values = values[::-1]  # alpha 1 is the mean; smaller alpha is more robust
        assert (values[1:] >= values[:-1] - 1e-12).all()
        assert values[0] == pytest.approx(float(losses.mean()), rel=1e-12)
    assert explore.effective_sample_size(torch.full((10,), 0.1)) == pytest.approx(10)
    with pytest.raises(ValueError, match="unknown loss distribution 'pareto'"):
        explore.sample_losses(5, "pareto")
