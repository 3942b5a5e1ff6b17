"""Prompt-robust RLOO in a TRL script: RLOOTrainer/RLOOConfig -> RobustRLOOTrainer/RobustRLOOConfig.

python examples/trl_rloo.py
"""

import tempfile

from datasets import Dataset

from drostudy import RobustRLOOConfig, RobustRLOOTrainer
from drostudy.models import tiny_policy


def short_and_sweet(completions, **kwargs):
    """A toy reward: shorter completions score higher."""
    return [-float(len(c)) for c in completions]


prompts = Dataset.from_list([{"prompt": f"Say something about {w}."} for w in "abcdefgh"])
with tempfile.TemporaryDirectory() as out:
    model, tokenizer = tiny_policy()
    model.save_pretrained(f"{out}/policy")  # TRL loads its reference copy from the path
    args = RobustRLOOConfig(
        output_dir=out,
        divergence="tv",
        radius=0.2,  # the worst case over the prompts of a generation batch
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=4,
        max_steps=2,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to="none",
    )
    trainer = RobustRLOOTrainer(
        model=f"{out}/policy",
        reward_funcs=short_and_sweet,
        args=args,
        train_dataset=prompts,
        processing_class=tokenizer,
    )
    trainer.train()
    print({k: v for k, v in trainer.state.log_history[-2].items() if k.startswith(("loss", "dro/"))})
