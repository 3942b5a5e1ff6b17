"""Notebook 04's exact testbed study (drostudy.rl.testbed): resumable runs, the comparisons, the sentences.

Every piece of work is a `TestbedRun` (the data config, the bandit config and what to compute) run through
drostudy.runs.run_all into a config-hashed folder: the paired runs one folder per seed (every setting on
that seed's prompts and draws, a few seconds each), the convergence table and the training curves one
folder each. A rerun reads the finished folders and computes only what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from drostudy.analysis.results import mean_pm, t_interval
from drostudy.analysis.stats import RESULT_COLUMNS, add_domain_mean, fragility_note, half_width
from drostudy.rl.testbed import BanditConfig, convergence_table, paired_runs, training_curves
from drostudy.rl.testbed_data import DataConfig
from drostudy.runs import run_all

KINDS = ("paired", "convergence", "curves")
BASELINE = "ordinary"  # the plain algorithm's setting name, as every stage's baseline in the comparisons
LLM_METRICS = ("learned_reward", "correct", "kl")


@dataclass(frozen=True)
class TestbedRun:
    """One resumable piece of the testbed study."""

    kind: str
    """paired (every setting on one seed), convergence (gap to the full-batch optimum) or curves"""
    bandit: BanditConfig
    """the minibatch algorithm's config (its seed is the run's seed; curves and convergence: its ball)"""
    data: DataConfig = DataConfig()
    """the real data behind the bandits (recorded so that another data config gets another folder)"""
    settings: tuple[tuple[str, str, float], ...] = ()
    """paired: (name, divergence, radius) of every setting; the baseline is radius 0"""
    per_domain: int | None = None
    """paired: training prompts per train domain drawn by the seed (None: all)"""
    batch_sizes: tuple[int, ...] = ()
    """convergence: the minibatch sizes compared"""
    n_evals: int = 12
    """convergence and curves: log-spaced evaluation steps"""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}; got {self.kind!r}")

    @property
    def seed(self) -> int:
        return self.bandit.seed


def compute(run: TestbedRun, train, test) -> dict:
    """The rows of one `TestbedRun` on the loaded bandits (train, test): {"stage", "kind", "rows", ...}."""
    if run.kind == "paired":
        settings = {name: (div, radius) for name, div, radius in run.settings}
        table = paired_runs(train, test, run.bandit, settings, (run.seed,), run.per_domain)
        extra = {}
    elif run.kind == "convergence":
        table, optimum = convergence_table(train, run.bandit, run.batch_sizes, run.n_evals)
        extra = {"optimum": optimum}
    else:
        table, extra = training_curves(train, test, run.bandit, run.n_evals), {}
    return {"stage": "rl_testbed", "kind": run.kind, "rows": table.to_dict("records"), **extra}


def run_testbed(runs: list[tuple[str, TestbedRun]], folder, train, test, desc: str) -> list[dict]:
    """`run_all` the labelled runs (resuming finished ones) on the loaded bandits; metrics dicts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny float64 tensors: threads cost more than they bring
    try:
        return run_all(runs, folder, lambda run: compute(run, train, test), desc=desc)
    finally:
        torch.set_num_threads(threads)  # the LLM part after it wants every core


def rows(metrics: list[dict]) -> pd.DataFrame:
    """The concatenated rows of finished runs."""
    return pd.concat([pd.DataFrame(m["rows"]) for m in metrics], ignore_index=True)


def llm_results(records: list[dict], robust_label: str) -> pd.DataFrame:
    """RESULT_COLUMNS rows (stage rl_llm) of notebook 04's SmolLM2 runs: per domain and the split means of
    learned_reward, correct and kl; setting `BASELINE` (radius 0) or `robust_label`."""
    out = []
    for record in records:
        config = record["config"]
        setting = BASELINE if record["method"] == "ordinary" else robust_label
        for domain, values in record["per_domain"].items():
            split = "id" if domain in config["train_domains"] else "ood"
            out += [
                {"stage": "rl_llm", "setting": setting, "seed": record["seed"], "split": split,
                 "domain": domain, "metric": m, "value": float(values[m])}
                for m in LLM_METRICS
            ]  # fmt: skip
    return add_domain_mean(pd.DataFrame(out, columns=list(RESULT_COLUMNS)))


def primary_row(comparisons: pd.DataFrame, stage: str, setting: str, metric: str = "correct"):
    """The comparisons row of `setting` vs the baseline on the OOD mean of `metric` in `stage`."""
    hit = comparisons[
        (comparisons.stage == stage)
        & (comparisons.setting == setting)
        & (comparisons.split == "ood")
        & (comparisons.domain == "mean")
        & (comparisons.metric == metric)
    ]
    if len(hit) != 1:
        raise ValueError(f"no single OOD-mean {metric} row for {stage}/{setting}; got {len(hit)}")
    return hit.iloc[0]


def _describe(row) -> str:
    return (
        f"{row.mean_diff:+.4f} [{row.ci_low:+.4f}, {row.ci_high:+.4f}] over {row.n_seeds} paired seeds "
        f"({row.verdict}{fragility_note(row.ci_low, row.ci_high)}; half-width {half_width(row):.4f}, "
        f"MDE {row.mde:.4f})"
    )


def primary_text(comparisons: pd.DataFrame, setting: str, target: float) -> tuple[str, bool]:
    """The primary comparison's sentence and whether its interval's half-width is <= `target`."""
    row = primary_row(comparisons, "rl_testbed", setting)
    met = bool(half_width(row) <= target)
    text = (
        f"Primary (testbed): {setting} vs {BASELINE}, OOD-mean expected correctness: {_describe(row)}; "
        f"half-width target <= {target}: {'met' if met else 'NOT met'}."
    )
    return text, met


def exploratory_text(comparisons: pd.DataFrame, stage: str) -> str:
    """One line per setting of `stage`: OOD-mean and ID-mean correctness, OOD learned reward and KL."""
    part = comparisons[(comparisons.stage == stage) & (comparisons.domain == "mean")]
    lines = []
    for setting in part.setting.unique():
        bits = []
        for split, metric in (("ood", "correct"), ("id", "correct"), ("ood", "reward"),
                              ("ood", "learned_reward"), ("ood", "kl")):  # fmt: skip
            hit = part[(part.setting == setting) & (part.split == split) & (part.metric == metric)]
            if len(hit):
                row = hit.iloc[0]
                bits.append(
                    f"{split} {metric} {row.mean_diff:+.4f} ± {half_width(row):.4f} ({row.verdict})"
                )
        lines.append(f"  {stage} {setting} - {BASELINE}: " + "; ".join(bits))
    return "\n".join(lines)


def overoptimisation_sentence(results: pd.DataFrame, setting: str = BASELINE) -> str:
    """From paired testbed results: `setting`'s change from the reference policy in OOD-mean learned reward
    and in OOD-mean correctness (per seed, 95% t-interval), and whether that is over-optimisation."""
    ood = results[(results.split == "ood") & (results.domain == "mean")]
    wide = ood.pivot_table(index="seed", columns=["setting", "metric"], values="value")
    changes = {m: t_interval((wide[setting, m] - wide["reference", m]).to_numpy()) for m in ("reward", "correct")}  # fmt: skip
    (reward, reward_half), (correct, correct_half) = changes["reward"], changes["correct"]
    over = reward - reward_half > 0 and correct + correct_half < 0
    return (
        f"Over-optimisation ({setting}, OOD mean, vs the reference policy): learned reward "
        f"{mean_pm(reward, reward_half, '+.3f')}, expected correctness {mean_pm(correct, correct_half, '+.4f')}"
        f" -> {'over-optimised: the proxy rose while correctness fell' if over else 'not shown beyond seed noise'}."
    )


def convergence_sentence(table: pd.DataFrame, optimum: float) -> str:
    """The final gap of each batch size to the full-batch robust optimum."""
    last = table[table.step == table.step.max()].set_index("batch_size")["gap"]
    gaps = ", ".join(f"batch {b}: {g:+.4f}" for b, g in last.items())
    first = table[table.step == table.step.min()].set_index("batch_size")["gap"]
    shrank = bool((last.abs() < first.abs()).all())
    return (
        f"Convergence: robust objective optimum {optimum:.4f}; gap after {int(table.step.max())} steps {gaps}"
        f" ({'every batch size closed in on it' if shrank else 'not every batch size closed in'})."
    )
