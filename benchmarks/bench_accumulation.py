"""The cost of the worst case over the optimizer batch: one extra no-grad forward over the accumulated batch.

    python benchmarks/bench_accumulation.py                 # tiny-llama, 2 pairs x 4 accumulation steps
    python benchmarks/bench_accumulation.py --policy smollm2-135m-instruct --steps 6

Three RobustDPOTrainer runs on the same pairs and reference (precomputed log-probs, so only the policy's
forwards differ): TRL's DPO (divergence None), the per-micro-batch worst case (dro_batch="micro", no extra
pass) and the optimizer-batch worst case (the default, one no-grad policy forward over the k micro-batches
before their k forward/backward passes). Reported: median optimizer-step time of each and the overheads
optimizer/micro - 1 and optimizer/trl - 1. In FLOPs the extra pass is one forward per forward + backward,
i.e. about +1/3 with full fine-tuning and more with LoRA or frozen layers (a cheaper backward).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings

from datasets import Dataset
from transformers import TrainerCallback

from drostudy.dpo.trainer import RobustDPOTrainer
from drostudy.dropin.configs import RobustDPOConfig
from drostudy.models import load_policy


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (from one step's end to the next)."""

    def __init__(self):
        self.times, self._last = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._last = self._last or time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now


def pairs(n: int) -> Dataset:
    return Dataset.from_list(
        [
            {
                "prompt": f"What is {i} plus {i}? " + "Think. " * (i % 5),
                "chosen": f" It is {2 * i}.",
                "rejected": " I do not know that." * (1 + i % 3),
            }
            for i in range(n)
        ]
    )


def step_times(policy: str, robust: dict, batch: int, accumulation: int, steps: int) -> list[float]:
    model, tok = load_policy(policy)
    with tempfile.TemporaryDirectory() as out:
        args = RobustDPOConfig(
            output_dir=out,
            per_device_train_batch_size=batch,
            max_steps=steps,
            gradient_accumulation_steps=accumulation,
            precompute_ref_log_probs=True,
            use_cpu=True,
            bf16=False,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            max_length=96,
            **robust,
        )
        timer = StepTimer()
        trainer = RobustDPOTrainer(
            model=model,
            args=args,
            processing_class=tok,
            callbacks=[timer],
            train_dataset=pairs(batch * accumulation * steps),
        )
        trainer.train()
    return timer.times[1:]  # the first step carries warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="tiny-llama")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--accumulation", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    opts = parser.parse_args()
    warnings.filterwarnings("ignore")
    runs = {
        "trl": {},
        "micro": {"divergence": "kl", "radius": 0.5, "dro_batch": "micro"},
        "optimizer": {"divergence": "kl", "radius": 0.5},
    }
    medians = {
        name: statistics.median(
            step_times(opts.policy, robust, opts.batch, opts.accumulation, opts.steps)
        )
        for name, robust in runs.items()
    }
    result = {f"{k}_step_s": v for k, v in medians.items()}
    result["overhead_vs_micro"] = medians["optimizer"] / medians["micro"] - 1
    result["overhead_vs_trl"] = medians["optimizer"] / medians["trl"] - 1
    print(json.dumps(result | vars(opts), indent=2))


if __name__ == "__main__":
    main()
