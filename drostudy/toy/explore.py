"""Notebook 01's explorer: sampled losses, their worst-case weights over each divergence's radii, the widgets
that redraw them, and the sentences of what the notebook found.

`build_explorer(...)` returns one ipywidgets VBox: the controls ("divergence", "radius", "reg",
"examples", "losses", "seed") and three figures that follow them:
  weights   a plotly FigureWidget updated in place: the worst-case weights (trace "worst-case weights"),
            the penalised ones (trace "penalised weights (reg)", kl and chi2 only) against the sorted
            losses, and the uniform 1/n;
  value     the robust value against the radius, one panel per divergence, with the mean and max loss;
  ess       the effective sample size (1 / sum w^2, as a fraction of n) against the radius.
In JupyterLab the weights figure's data is readable from the DOM (the `.js-plotly-plot` element's
`data`, trace name "worst-case weights"). Under papermill the figures are built once, from the
parameters, and can be saved with save_figure. The figures themselves are drawn by drostudy.toy.figures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.io as pio
import torch

from drostudy.toy.figures import (
    RADIUS_LABELS,
    sweep_figure,
    update_weights_figure,
    weights_figure,
)
from drostudy.weights import DIVERGENCES, worst_case_weights

# How losses are drawn (numpy Generator -> (n,) float64); all positive, as per-example losses are.
LOSS_DISTRIBUTIONS = {
    "lognormal": lambda rng, n: rng.lognormal(mean=-0.5, sigma=0.75, size=n),  # skewed, a long tail
    "exponential": lambda rng, n: rng.exponential(scale=0.7, size=n),
    "uniform": lambda rng, n: rng.uniform(0.0, 2.0, size=n),  # no tail: weights stay spread
    # a minority (10%) with high loss, as a minority domain the model underfits
    "bimodal": lambda rng, n: np.where(
        rng.random(n) < 0.9, rng.normal(0.4, 0.1, n), rng.normal(2.0, 0.3, n)
    ).clip(0.0),
}
# The slider range of each divergence's radius (cvar: alpha, where 1 is the plain mean).
RADIUS_RANGES = {"tv": (0.0, 1.0), "kl": (0.0, 3.0), "chi2": (0.0, 5.0), "cvar": (0.02, 1.0)}


def sample_losses(n: int, distribution: str, seed: int = 0) -> torch.Tensor:
    """n per-example losses (n,) float64 drawn from `distribution` (a LOSS_DISTRIBUTIONS key)."""
    if distribution not in LOSS_DISTRIBUTIONS:
        raise ValueError(
            f"unknown loss distribution {distribution!r}; expected one of {sorted(LOSS_DISTRIBUTIONS)}"
        )
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n!r}")
    return torch.from_numpy(LOSS_DISTRIBUTIONS[distribution](np.random.default_rng(seed), n))


def effective_sample_size(weights: torch.Tensor) -> float:
    """1 / sum w_i^2 for weights (n,) summing to 1: n for uniform weights, 1 for a point mass."""
    return float(1.0 / (weights.double() ** 2).sum())


def radius_grid(divergence: str, num: int = 25) -> np.ndarray:
    """`num` radii across the divergence's slider range (denser near 0, where the weights change fastest)."""
    low, high = RADIUS_RANGES[divergence]
    return low + (high - low) * np.linspace(0.0, 1.0, num) ** 2


def radius_sweep(losses: torch.Tensor, num: int = 25) -> pd.DataFrame:
    """Robust value, effective sample size (fraction of n) and max weight over each divergence's radii.

    Columns: divergence, radius, value, ess, max_weight (one row per divergence and radius).
    """
    rows = []
    for divergence in DIVERGENCES:
        for radius in radius_grid(divergence, num):
            w = worst_case_weights(losses, divergence, float(radius))
            ess = effective_sample_size(w) / len(losses)
            value = float(w @ losses)
            rows.append(
                dict(
                    divergence=divergence, radius=radius, value=value, ess=ess, max_weight=float(w.max())
                )
            )
    return pd.DataFrame(rows)


def _explorer_controls(divergence, radius, reg, n_examples, distribution, seed) -> dict:
    """The explorer's widgets by name, at the given starting values (the radius range of `divergence`)."""
    import ipywidgets as widgets

    low, high = RADIUS_RANGES[divergence]
    return {
        "divergence": widgets.Dropdown(
            options=list(DIVERGENCES), value=divergence, description="divergence"
        ),
        "radius": widgets.FloatSlider(
            value=radius, min=low, max=high, step=0.01, description="radius", continuous_update=False
        ),
        "reg": widgets.FloatLogSlider(value=reg, base=10, min=-2, max=1, step=0.05, description="reg"),
        "examples": widgets.IntSlider(value=n_examples, min=4, max=512, description="examples"),
        "losses": widgets.Dropdown(
            options=sorted(LOSS_DISTRIBUTIONS), value=distribution, description="losses"
        ),
        "seed": widgets.IntText(value=seed, description="seed"),
    }


def _show_in(output, fig) -> None:
    """Show plotly `fig` in ipywidgets `output`, replacing what it showed."""
    # plotly's own display hook publishes at the top level, so hand the Output its mime bundle
    bundle = pio.renderers["plotly_mimetype"].to_mimebundle(fig.to_dict())
    output.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)


def build_explorer(
    divergence: str = "tv",
    radius: float = 0.2,
    reg: float = 1.0,
    n_examples: int = 64,
    distribution: str = "lognormal",
    seed: int = 0,
):
    """(ui, figures): an ipywidgets VBox to display, and the live {"weights", "value", "ess"} figures.

    The ui holds the controls, the weights FigureWidget (updated in place) and two Output widgets with the
    value and ESS figures. Moving "radius", "reg" or "divergence" redraws the weights; "examples", "losses"
    or "seed" draw new losses and redraw all three. The radius slider's range follows the divergence.
    Only the weights figure is a FigureWidget: each one carries plotly.js (5 MB) in the saved notebook.
    """
    import ipywidgets as widgets

    controls = _explorer_controls(divergence, radius, reg, n_examples, distribution, seed)
    losses = {"now": sample_losses(n_examples, distribution, seed)}
    figures = {"weights": weights_figure(losses["now"], divergence, radius, reg, widget=True)}
    outputs = {"value": widgets.Output(), "ess": widgets.Output()}

    def redraw_weights(_=None):
        c = {k: w.value for k, w in controls.items()}
        update_weights_figure(figures["weights"], losses["now"], c["divergence"], c["radius"], c["reg"])

    def redraw_sweeps():
        sweep = radius_sweep(losses["now"])
        figures["value"] = sweep_figure(
            sweep, "value", "robust value sum_i w_i l_i (nats)", losses["now"]
        )
        figures["ess"] = sweep_figure(sweep, "ess", "effective sample size / n")
        for name, output in outputs.items():
            _show_in(output, figures[name])

    def new_losses(_=None):
        c = {k: w.value for k, w in controls.items()}
        losses["now"] = sample_losses(c["examples"], c["losses"], c["seed"])
        redraw_sweeps()
        redraw_weights()

    def new_divergence(change):
        slider, (low, high) = controls["radius"], RADIUS_RANGES[change["new"]]
        value = min(max(slider.value, low), high)
        with slider.hold_trait_notifications():  # one redraw, and never an invalid radius
            slider.min, slider.max = min(low, slider.min), max(high, slider.max)
            slider.value, slider.min, slider.max = value, low, high
        redraw_weights()

    redraw_sweeps()
    controls["divergence"].observe(new_divergence, names="value")
    for name in ("radius", "reg"):
        controls[name].observe(redraw_weights, names="value")
    for name in ("examples", "losses", "seed"):
        controls[name].observe(new_losses, names="value")
    rows = [widgets.HBox(list(controls.values())[:3]), widgets.HBox(list(controls.values())[3:])]
    return widgets.VBox([*rows, figures["weights"], outputs["value"], outputs["ess"]]), figures


def weights_summary(losses: torch.Tensor, divergence: str, radius: float) -> dict[str, float]:
    """Scalars of the worst case at one radius: mean loss, robust value, max weight x n, ESS / n."""
    w = worst_case_weights(losses, divergence, radius)
    return {
        "mean_loss": float(losses.mean()),
        "robust_value": float(w @ losses),
        "max_weight_times_n": float(w.max()) * len(losses),
        "ess_fraction": effective_sample_size(w) / len(losses),
    }


def conclusion_text(record: dict) -> str:
    """What notebook 01 found, in sentences written from the recorded numbers (any parameters)."""
    p, w = record["parameters"], record["weights"]
    lines = [
        f"Weights ({p['DIVERGENCE']}, {RADIUS_LABELS[p['DIVERGENCE']]} {p['RADIUS']:g}, n={p['N_EXAMPLES']} "
        f"{p['LOSS_DISTRIBUTION']} losses): the largest loss gets {w['max_weight_times_n']:.2f}x the uniform "
        f"weight, the effective sample size is {w['ess_fraction']:.0%} of n, and the robust value is "
        f"{w['robust_value']:.3f} against a mean loss of {w['mean_loss']:.3f}."
    ]
    gaps = {int(k): v for k, v in record["convergence"][p["DIVERGENCE"]]["final_gap"].items()}
    sizes = sorted(gaps)
    shrinks = all(gaps[a] > gaps[b] for a, b in zip(sizes, sizes[1:], strict=False))
    lines.append(
        f"Minibatch {p['DIVERGENCE']} DRO, {record['convergence']['steps']} steps from the ordinary optimum: "
        "the averaged iterate's gap to the exact optimum is "
        + ", ".join(f"{gaps[b]:.2g} (batch {b})" for b in sizes)
        + (
            ": the gap left shrinks as the batch grows."
            if shrinks
            else ": the gap left does not shrink monotonically with the batch size."
        )
    )
    s = record["domain_shift"]
    shifted, worst = s["shifted_loss"], s["worst_domain_loss"]

    def verdict(model):
        return (
            f"{model} {'beats' if shifted[model] < shifted['ordinary'] else 'does not beat'} ordinary under the "
            f"shift ({shifted[model]:.3f} vs {shifted['ordinary']:.3f}) and "
            f"{'beats' if worst[model] < worst['ordinary'] else 'does not beat'} it on the worst domain "
            f"({worst[model]:.3f} vs {worst['ordinary']:.3f})"
        )

    lines.append(
        f"Domain shift inside the ball (divergence {s['shift_divergence']:.3g} <= {p['RADIUS']:g} for "
        f"{p['DIVERGENCE']}; mix {_mix(s['nominal_mix'])} -> {_mix(s['shifted_mix'])}): "
        f"{verdict('robust')}; {verdict('group')}."
    )
    return "\n".join(lines)


def _mix(mix: list[float]) -> str:
    return "(" + ", ".join(f"{m:.2f}" for m in mix) + ")"
