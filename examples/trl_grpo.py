"""Prompt-robust GRPO in a TRL script: GRPOTrainer/GRPOConfig -> RobustGRPOTrainer/RobustGRPOConfig.

python examples/trl_grpo.py
"""

import tempfile

from datasets import Dataset

from drostudy import RobustGRPOConfig, RobustGRPOTrainer
from drostudy.models import tiny_policy


def short_and_sweet(completions, **kwargs):
    """A toy reward: shorter completions score higher."""
    return [-float(len(c)) for c in completions]


prompts = Dataset.from_list([{"prompt": f"Say something about {w}."} for w in "abcdefgh"])
with tempfile.TemporaryDirectory() as out:
    model, tokenizer = tiny_policy()
    args = RobustGRPOConfig(
        output_dir=out,
        divergence="tv",
        radius=0.2,  # the worst case over the prompts of a generation batch
        per_device_train_batch_size=4,
        num_generations=2,
        steps_per_generation=2,  # one generation batch of 4 prompts, trained on over 2 steps
        max_completion_length=4,
        max_steps=2,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to="none",
    )
    trainer = RobustGRPOTrainer(
        model=model,
        reward_funcs=short_and_sweet,
        args=args,
        train_dataset=prompts,
        processing_class=tokenizer,
    )
    trainer.train()
    first = next(row for row in trainer.state.log_history if "loss" in row)  # the step that generated
    print({k: v for k, v in first.items() if k.startswith(("loss", "dro/"))})
