"""Robust DPO in a TRL script: TRL's DPOTrainer/DPOConfig with two names changed and divergence/radius set.

python examples/trl_dpo.py   (a tiny random model; seconds on a CPU)
"""

import tempfile

from datasets import Dataset

from drostudy import RobustDPOConfig, RobustDPOTrainer
from drostudy.models import tiny_policy

pairs = Dataset.from_list(
    [
        {"prompt": f"What is {i} + {i}?", "chosen": f" {2 * i}.", "rejected": " No idea.", "domain": d}
        for i, d in zip(range(16), ["math", "code"] * 8, strict=False)
    ]
)
with tempfile.TemporaryDirectory() as out:
    model, tokenizer = tiny_policy()
    model.save_pretrained(f"{out}/policy")  # TRL loads its reference copy from the path
    args = RobustDPOConfig(
        output_dir=out,
        divergence="kl",  # the ball around the batch's empirical distribution
        radius=0.5,  # 0 = TRL's DPO
        group_column="domain",  # only read for level="group" or dro_method="group_eg"
        per_device_train_batch_size=2,
        gradient_accumulation_steps=4,  # the worst case is over all 8 pairs of an optimizer step
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
        use_cpu=True,
        bf16=False,
        report_to="none",
    )
    trainer = RobustDPOTrainer(
        model=f"{out}/policy", args=args, train_dataset=pairs, processing_class=tokenizer
    )
    trainer.train()
    print({k: v for k, v in trainer.state.log_history[-2].items() if k.startswith(("loss", "dro/"))})
    print(trainer.evaluate(eval_dataset=pairs.select(range(4)))["eval_loss"])
    trainer.save_model(f"{out}/robust")  # beside the model: drostudy_robust.json
