"""A robust reward model in a TRL script: RewardTrainer/RewardConfig -> RobustRewardTrainer/RobustRewardConfig.

python examples/trl_reward.py
"""

import tempfile

from datasets import Dataset

from drostudy import RobustRewardConfig, RobustRewardTrainer
from drostudy.models import tiny_reward_model

pairs = Dataset.from_list(
    [
        {"prompt": f"Question {i}?", "chosen": f" The answer is {i}.", "rejected": " Hmm.", "domain": d}
        for i, d in zip(range(16), ["math", "code"] * 8, strict=False)
    ]
)
with tempfile.TemporaryDirectory() as out:
    model, tokenizer = tiny_reward_model()
    args = RobustRewardConfig(
        output_dir=out,
        divergence="chi2",
        radius=1.0,
        level="group",  # the worst case over the domains of the batch
        group_column="domain",
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=2,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to="none",
    )
    trainer = RobustRewardTrainer(
        model=model, args=args, train_dataset=pairs, processing_class=tokenizer
    )
    trainer.train()
    print({k: v for k, v in trainer.state.log_history[-2].items() if k.startswith(("loss", "dro/"))})
    trainer.save_model(f"{out}/robust")
