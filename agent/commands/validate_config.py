"""``algocyte-agent validate-config FILE``: check a configuration before deploying it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.config import load_config


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "validate-config",
        parents=[common],
        help="check a configuration file and report every problem",
        description=(
            "Validate FILE as an agent configuration. Prints 'FILE: ok' and exits 0 when it "
            "is valid; otherwise prints one line per problem (file, line, key path, the bad "
            "value and what was expected) and exits 2. Secrets the file leaves empty are "
            "looked up in the environment and systemd credentials as the daemon would."
        ),
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the YAML file to check")
    p.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    load_config(args.file)
    sys.stdout.write(f"{args.file}: ok\n")
    return 0
