"""``algocyte-agent bench``: measure model speed on this board."""

from __future__ import annotations

import argparse

from agent.commands.common import load_selected_config
from agent.commands.pending import not_available


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "bench",
        parents=[common],
        help="measure detector and classifier latency on this machine",
        description=(
            "Time the installed models on synthetic input with 1 thread and with all threads, "
            "so an engineer bringing up a new board can see what a field and a cell cost."
        ),
    )
    p.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    load_selected_config(args, fallback="embedded")
    raise not_available("the model benchmark")
