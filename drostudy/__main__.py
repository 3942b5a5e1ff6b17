"""`python -m drostudy COMMAND ...`: each command lives in its own module, imported only when used.

A command module provides `add_cli_arguments(parser)` and `cli_main(args) -> int | None`. A bad value
(drostudy.config.UsageError, raised while a command checks its configuration, before any model loads) is
one `drostudy COMMAND: error: ...` line on stderr and exit status 2, as argparse does; any other error
keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from drostudy.config import UsageError

COMMANDS = {
    "data": ("drostudy.data.cli", "build or describe the offline preference suite"),
    "rm": ("drostudy.reward.run", "train and evaluate a (robust) Bradley-Terry reward model"),
    "dpo": ("drostudy.dpo.run", "train and evaluate a (robust) DPO policy"),
    "rl": ("drostudy.rl.cli", "robust reward-based RL against a learned reward model (RLOO or GRPO)"),
    "sweep": ("drostudy.runner.sweep", "run a notebook or command over a grid of parameters, resumably"),
    "study": ("drostudy.runner.study", "run every numbered notebook headless (what `make study` does)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="drostudy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if argv and argv[0] in COMMANDS:  # import only the module of the command asked for
        module_name, help_text = COMMANDS[argv[0]]
        module = importlib.import_module(module_name)
        command = sub.add_parser(argv[0], help=help_text)
        module.add_cli_arguments(command)
        args = parser.parse_args(argv)
        try:
            return int(module.cli_main(args) or 0)
        except UsageError as err:
            message = " ".join(str(err).split())  # one line, whatever the message's layout
            print(f"{command.prog}: error: {message}", file=sys.stderr)
            return 2
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text)
    parser.parse_args(argv)  # prints usage / errors for unknown commands
    return 0


if __name__ == "__main__":
    sys.exit(main())
