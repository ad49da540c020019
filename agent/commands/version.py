"""``algocyte-agent version``: what is installed, for bug reports and provenance checks."""

from __future__ import annotations

import argparse
import platform
import sys

from agent import __version__


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "version",
        parents=[common],
        help="print the software version",
        description="Print the agent's version and the Python it runs on.",
    )
    p.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    sys.stdout.write(f"algocyte-agent {__version__} (Python {platform.python_version()})\n")
    return 0
