"""`python -m drostudy rl ...`: the RL run on RLOO (drostudy.rl.run, the default) or, with `--trainer grpo`,
on GRPO (drostudy.rl.grpo_run). Both take the same flags; the trainer picks the config class and trainer."""

from __future__ import annotations

import argparse

from drostudy.rl import grpo_run, run

TRAINERS = {"rloo": run, "grpo": grpo_run}  # --trainer value -> the module with that run's cli_main


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    run.add_cli_arguments(parser)
    parser.add_argument(
        "--trainer",
        choices=list(TRAINERS),
        default="rloo",
        help="TRL trainer: rloo (RobustRLOOTrainer) or grpo (RobustGRPOTrainer; --trl-args are GRPOConfig's)",
    )


def cli_main(args: argparse.Namespace) -> int:
    return TRAINERS[args.trainer].cli_main(args)
