"""Time filling the testbed's MiniLM feature cache: padded batches of 64 (the cache's previous way, whose
values depended on what the cache already held) against one text at a time (drostudy.rl.testbed_features
.embed now, the same bits whatever the fill order), in one process on the same texts.

    python benchmarks/bench_testbed_cache.py [--sample 1500] [--smollm2-sample 0]

The texts are those notebook 04's testbed embeds (the candidates' prompts and responses of every domain,
the reward pairs of math and code), `--sample` of them drawn at random (0: all), each way into a fresh
cache; the per-text time is extrapolated to all of them. `--smollm2-sample` times SmolLM2's log-probs
(the "smollm2" reference) in batches of 16 against one pair at a time. Prints JSON: wall and process CPU
seconds per way, the extrapolation, and the largest difference between the two ways' vectors. On a shared
machine the CPU time is the fairer one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time

import numpy as np
import torch

from drostudy import evaluate
from drostudy.data.suite import load_suite
from drostudy.rl import testbed_data, testbed_features
from drostudy.rl.testbed_data import DataConfig

DOMAINS = ("math", "code", "reasoning", "knowledge", "safety")


def testbed_texts() -> dict[str, list[str]]:
    """{"left": prompts, "right": responses} that notebook 04's testbed embeds, unique, sorted."""
    config = DataConfig(train_domains=("math", "code"))
    tables = [
        testbed_data.candidates("train", config.train_domains, config),
        testbed_data.candidates("test", DOMAINS, config),
    ]
    pairs = load_suite()["train"].to_pandas()
    pairs = pairs[pairs.domain.isin(config.train_domains)]
    left = {*pairs.prompt, *(p for t in tables for p in t.prompt)}
    right = {*pairs.chosen, *pairs.rejected, *(r for t in tables for r in t.response)}
    return {"left": sorted(left), "right": sorted(right)}


def batched(texts: list[str], left: bool, batch_size: int = 64) -> np.ndarray:
    """The cache's previous fill: padded batches of `batch_size` of the missing texts, sorted."""
    from transformers import AutoModel, AutoTokenizer

    from drostudy.models import minilm_path

    tok = AutoTokenizer.from_pretrained(str(minilm_path()), truncation_side="left" if left else "right")
    model = AutoModel.from_pretrained(str(minilm_path())).eval()
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tok(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=128,
            return_tensors="pt",
        )
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out).numpy()


def timed(fn, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, {
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=int, default=1500)
    parser.add_argument("--smollm2-sample", type=int, default=0)
    args = parser.parse_args()
    texts = testbed_texts()
    total = sum(len(v) for v in texts.values())
    rng = random.Random(0)
    report = {"texts_total": total, "threads": torch.get_num_threads()}
    for way in ("batched_64", "one_at_a_time"):
        report[way] = {"wall_s": 0.0, "cpu_s": 0.0, "texts": 0}
    vectors = {}
    for side, all_texts in texts.items():
        chosen = (
            sorted(rng.sample(all_texts, min(args.sample, len(all_texts)))) if args.sample else all_texts
        )
        old, t_old = timed(batched, chosen, side == "left")
        with tempfile.TemporaryDirectory() as cache:
            os.environ["DROSTUDY_CACHE"] = cache
            new, t_new = timed(testbed_features.embed, chosen, side == "left")
        vectors[side] = float(np.abs(old - new).max())
        for way, t in (("batched_64", t_old), ("one_at_a_time", t_new)):
            report[way]["wall_s"] += t["wall_s"]
            report[way]["cpu_s"] += t["cpu_s"]
            report[way]["texts"] += len(chosen)
    for way in ("batched_64", "one_at_a_time"):
        r = report[way]
        r["cpu_s_all_texts"] = round(r["cpu_s"] / r["texts"] * total, 1)
        r["wall_s_all_texts"] = round(r["wall_s"] / r["texts"] * total, 1)
    report["max_abs_difference"] = vectors
    if args.smollm2_sample:
        from drostudy.models import load_policy

        model, tok = load_policy()
        table = testbed_data.candidates("test", DOMAINS, DataConfig()).sample(
            args.smollm2_sample, random_state=0
        )
        system = {"role": "system", "content": testbed_features.SYSTEM_PROMPT}
        chats = [[system, {"role": "user", "content": p}] for p in table.prompt]
        for batch in (16, 1):
            _, t = timed(evaluate.reference_logps, model, tok, chats, list(table.response), model, batch)
            report[f"smollm2_batch_{batch}"] = t
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
