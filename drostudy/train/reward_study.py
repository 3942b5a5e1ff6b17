"""What notebook 02 runs and tabulates: reward-model settings on shared cached features, their tables, and a
conclusion written from the numbers.

`RewardStudy(base)` loads the suite, the model and the frozen-feature cache once; `run(seed, **overrides)`
trains one setting (drostudy.train.reward_cached.run_cached) and returns its metrics in the layout of
drostudy.train.common. Labels name a setting: `ordinary`, `robust tv 0.2`, `group_robust tv 0.2`, ...
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch

from drostudy import results
from drostudy.progress import tqdm
from drostudy.train import reward_cached
from drostudy.train.common import domain_means
from drostudy.train.reward import RMConfig
from drostudy.train.reward_data import TEST_SEED
from drostudy.weights import worst_case_weights


class RewardStudy:
    """Shared state of a grid of cached-engine runs: suite, model, pretrained top weights, feature cache."""

    def __init__(self, base: RMConfig):
        from drostudy.data import DOMAINS, load_suite

        self.base, self.suite, self.domains = base, load_suite(), DOMAINS
        self.model, self.tokenizer, self.initial = reward_cached.load_cached_model(base)
        self.features = reward_cached.FrozenFeatures(
            self.model, self.tokenizer, base.frozen_layers, base.max_length
        )
        self.test = self._test()

    def _test(self):
        from datasets import concatenate_datasets

        from drostudy.data import select

        parts = []
        for domain in self.domains:
            available = sum(1 for d in self.suite["test"]["domain"] if d == domain)
            n = min(self.base.n_test, available) if self.base.n_test else None
            parts.append(select(self.suite["test"], domains=[domain], n=n, seed=TEST_SEED))
        return concatenate_datasets(parts)

    def train_split(self, config: RMConfig):
        from drostudy.data import select

        shares = (
            dict(zip(config.train_domains, config.train_proportions, strict=True))
            if config.train_proportions
            else None
        )
        kinds = config.train_kinds or None
        return select(
            self.suite["train"], config.train_domains, kinds, shares, config.n_train, config.seed
        )

    def run(self, seed: int, **overrides) -> dict:
        """Train and evaluate `base` with `seed` and `overrides`; metrics as drostudy.train.common writes."""
        config = dataclasses.replace(self.base, seed=seed, **overrides)
        metrics = reward_cached.run_cached(
            config, self.model, self.initial, self.features, self.train_split(config), self.test
        )
        metrics["config"] = dataclasses.asdict(config)
        metrics["in_distribution"] = domain_means(metrics["per_domain"], config.train_domains)
        metrics["out_of_distribution"] = domain_means(metrics["per_domain"], config.eval_domains)
        metrics["label"] = setting_label(config)
        return metrics

    def grid(self, settings: list[dict], seeds) -> list[dict]:
        """`run` every setting (a dict of overrides) with every seed, with a progress bar."""
        jobs = [(s, seed) for s in settings for seed in seeds]
        return [self.run(seed, **s) for s, seed in tqdm(jobs, desc="reward models")]

    def train_losses(self, config: RMConfig) -> np.ndarray:
        """Per-pair BT losses of the model as it stands (call right after a run) on that run's train pairs."""
        margins = reward_cached.cached_margins(
            self.model, *self.features.pairs(self.train_split(config)), config.frozen_layers
        )
        return np.logaddexp(0.0, -margins)  # -log sigmoid(margin), stable


def setting_label(config: RMConfig) -> str:
    """`ordinary`, or `<method> <divergence> <radius>` (method carries group/filtered)."""
    if config.method.startswith("ordinary"):
        return config.method
    return f"{config.method} {config.divergence} {config.radius:g}"


def mean_ess(
    losses: np.ndarray, batch_size: int, divergence: str, radius: float, n_batches: int = 64
) -> float:
    """Mean effective sample size 1/sum w^2 of the worst-case weights, as a fraction of the batch size,
    over `n_batches` random minibatches of `losses` (n,) (fixed seed, so radii can be matched by bisection)."""
    rng = np.random.default_rng(0)
    batches = torch.tensor(
        np.stack([rng.choice(losses, batch_size, replace=False) for _ in range(n_batches)])
    )
    ess = [1.0 / float((worst_case_weights(b, divergence, radius) ** 2).sum()) for b in batches]
    return float(np.mean(ess)) / batch_size


def matched_radius(losses: np.ndarray, batch_size: int, divergence: str, target_ess: float) -> float:
    """The radius of `divergence` whose worst case keeps the same mean effective sample size `target_ess`
    (a fraction of the batch) on minibatches of `losses`: radii that concentrate the weights equally."""
    lo, hi = (
        (1.0 / batch_size, 1.0) if divergence == "cvar" else (0.0, {"tv": 1.0}.get(divergence, 50.0))
    )
    for _ in range(40):  # ESS falls as the ball grows (as alpha shrinks, for cvar)
        mid = 0.5 * (lo + hi)
        shrinks = mean_ess(losses, batch_size, divergence, mid) < target_ess
        lo, hi = (mid, hi) if shrinks == (divergence == "cvar") else (lo, mid)
    return round(0.5 * (lo + hi), 4)


def accuracy_frame(runs: list[dict]) -> pd.DataFrame:
    """Tidy accuracy rows (drostudy.results.tidy) with each run's `label`."""
    rows = [r | {"label": run["label"]} for run in runs for r in results.tidy(run)]
    frame = pd.DataFrame(rows)
    return frame[frame["metric"] == "accuracy"]


def accuracy_summary(runs: list[dict]) -> pd.DataFrame:
    """Mean accuracy and 95% t-interval over seeds, per label and domain (plus `ID mean`, `OOD mean`)."""
    frame = accuracy_frame(runs)
    means = frame.groupby(["label", "seed", "in_distribution"])["value"].mean().reset_index()
    means["domain"] = np.where(means["in_distribution"], "ID mean", "OOD mean")
    frame = pd.concat([frame, means.assign(metric="accuracy")], ignore_index=True)
    return results.summary(frame, by=("label", "domain"))


def weight_mass(runs: list[dict], prefix: str = "dro/kind_mass/") -> pd.DataFrame:
    """Mean weight mass per kind (or domain, prefix dro/weight_mass/) over training steps, per run."""
    rows = []
    for run in runs:
        history = pd.DataFrame(run["history"])
        for col in (c for c in history.columns if c.startswith(prefix)):
            mass = float(history[col].fillna(0.0).mean())
            rows.append(
                {
                    "label": run["label"],
                    "seed": run["config"]["seed"],
                    "name": col[len(prefix) :],
                    "mass": mass,
                }
            )
    return pd.DataFrame(rows)


def relative_mass(runs: list[dict], prefix: str = "dro/kind_mass/") -> pd.DataFrame:
    """Weight mass of each kind/domain under each setting divided by its share under ordinary training
    (1 = no tilt; 2 = twice its share); mean over seeds. Columns: label, name, mass, share, ratio."""
    mass = weight_mass(runs, prefix).groupby(["label", "name"])["mass"].mean().reset_index()
    share = mass[mass["label"] == "ordinary"].set_index("name")["mass"].rename("share")
    out = mass[mass["label"] != "ordinary"].join(share, on="name")
    return out.assign(ratio=out["mass"] / out["share"]).reset_index(drop=True)


def top_weighted_pairs(run: dict, train, k: int = 8) -> pd.DataFrame:
    """The `k` training pairs with the largest mean relative weight n * w_i in `run` (1 = ordinary)."""
    weights = pd.Series(run["pair_weights"]["relative_weight"], index=run["pair_weights"]["id"])
    frame = train.select_columns(["id", "domain", "kind", "prompt", "chosen", "rejected"]).to_pandas()
    frame["relative_weight"] = frame["id"].map(weights)
    frame["prompt"] = frame["prompt"].str.slice(-120)
    return frame.nlargest(k, "relative_weight").reset_index(drop=True)


def _pm(row) -> str:
    half = "" if pd.isna(row["ci95"]) else f" ± {row['ci95']:.3f}"
    return f"{row['mean']:.3f}{half}"


def _verdict(diff: float, half: float) -> str:
    if pd.isna(half):
        return "one seed, no interval"
    if abs(diff) <= half:
        return "within the 95% intervals"
    return "better beyond the intervals" if diff > 0 else "worse beyond the intervals"


def setting_table(summary: pd.DataFrame, reference: str = "ordinary") -> pd.DataFrame:
    """Per label: OOD mean, ID mean, worst domain and its accuracy, OOD gain over `reference` and whether it
    exceeds the sum of both 95% half-widths (a conservative test)."""
    by = summary.set_index(["label", "domain"])
    domains = [d for d in summary["domain"].unique() if not d.endswith(" mean")]
    ref = by.loc[(reference, "OOD mean")]
    rows = []
    for label in summary["label"].unique():
        ood, idm = by.loc[(label, "OOD mean")], by.loc[(label, "ID mean")]
        worst = min(domains, key=lambda d: by.loc[(label, d), "mean"])
        gain = ood["mean"] - ref["mean"]
        rows.append(
            {"label": label, "ood": _pm(ood), "id": _pm(idm), "worst_domain": worst}
            | {"worst_accuracy": by.loc[(label, worst), "mean"], "ood_gain": gain}
            | {"verdict": _verdict(gain, ood["ci95"] + ref["ci95"])}
        )
    return pd.DataFrame(rows).sort_values("ood_gain", ascending=False).reset_index(drop=True)


def _largest_drop(summary: pd.DataFrame, domain: str) -> str:
    """The setting that loses most accuracy on `domain` against ordinary (means over seeds)."""
    part = summary[summary["domain"] == domain].set_index("label")["mean"]
    drops = (part - part["ordinary"]).drop("ordinary").sort_values()
    if drops.empty or drops.iloc[0] >= 0:
        return f"On {domain} no setting is below ordinary ({part['ordinary']:.3f})."
    return (
        f"On {domain} the largest loss against ordinary ({part['ordinary']:.3f}) is {drops.index[0]} "
        f"({drops.iloc[0]:+.3f}); {int((drops < 0).sum())} of {len(drops)} settings are below it."
    )


def conclusion(
    table: pd.DataFrame,
    kind_ratio: pd.DataFrame,
    main_label: str,
    filtered_kind: str | None,
    summary: pd.DataFrame | None = None,
    eval_domains=(),
) -> str:
    """What the numbers say, as sentences: best setting, where robust training does not help, which kinds
    the worst case chases under `main_label`, and what dropping `filtered_kind` from training did."""
    t = table.set_index("label")
    o = t.loc["ordinary"]
    best = table[table["label"] != "ordinary"].iloc[0]
    lines = [
        f"Ordinary training: OOD accuracy {o['ood']}, ID {o['id']}, worst domain {o['worst_domain']} "
        f"({o['worst_accuracy']:.3f}).",
        f"Best other setting out of distribution: {best['label']} with {best['ood']} "
        f"({best['ood_gain']:+.3f}, {best['verdict']}); its worst domain {best['worst_domain']} "
        f"{best['worst_accuracy']:.3f}.",
    ]
    worse = table[table["verdict"] == "worse beyond the intervals"]["label"].tolist()
    same = table[(table["verdict"] == "within the 95% intervals") & (table["label"] != "ordinary")][
        "label"
    ]
    lines.append(f"Worse than ordinary beyond the intervals: {', '.join(worse) or 'none'}.")
    lines.append(f"Not distinguishable from ordinary: {', '.join(same) or 'none'}.")
    if summary is not None:
        lines += [_largest_drop(summary, domain) for domain in eval_domains]
    chased = kind_ratio[kind_ratio["label"] == main_label].sort_values("ratio", ascending=False)
    if len(chased):
        top = chased.iloc[0]
        lines.append(
            f"Under {main_label} the weights favour kind '{top['name']}': {top['ratio']:.2f}x its share of the "
            f"batch ({top['mass']:.3f} of the mass against {top['share']:.3f})."
        )
    if filtered_kind is not None:
        kept = [lab for lab in t.index if lab.endswith("_filtered") or "filtered" in lab]
        parts = [f"{lab}: OOD {t.loc[lab, 'ood']} ({t.loc[lab, 'ood_gain']:+.3f})" for lab in kept]
        lines.append(f"Without kind '{filtered_kind}' in training: " + "; ".join(parts) + ".")
    return "\n".join(lines)


def kind_accuracy(runs: list[dict], domains) -> pd.Series:
    """Mean test accuracy of each kind of rejected response over `runs` and `domains` (per_kind metrics)."""
    rows = [
        {"kind": key.split("/", 1)[1], "accuracy": value["accuracy"]}
        for run in runs
        for key, value in run["per_kind"].items()
        if key.split("/", 1)[0] in domains
    ]
    return pd.DataFrame(rows).groupby("kind")["accuracy"].mean().sort_values()
