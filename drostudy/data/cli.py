"""`python -m drostudy data build [--rebuild] [--seed N] [--per-domain N]` and `... data describe`."""

from __future__ import annotations

import argparse
import logging
import time

from drostudy.config import add_dataclass_arguments, dataclass_from_args
from drostudy.data.build import BuildConfig


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action", choices=["build", "describe"], help="build the cached suite, or print its counts"
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if the cache is valid")
    add_dataclass_arguments(parser, BuildConfig)


def cli_main(args: argparse.Namespace) -> int:
    from drostudy.data.suite import describe, load_suite

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = dataclass_from_args(BuildConfig, args)
    start = time.perf_counter()
    suite = load_suite(rebuild=args.rebuild, **config.params())
    seconds = time.perf_counter() - start
    if args.action == "build":
        sizes = ", ".join(f"{split} {len(ds)}" for split, ds in suite.items())
        print(f"suite ready in {seconds:.1f} s: {sizes} pairs")
    else:
        print(describe(suite).to_string())
    return 0
