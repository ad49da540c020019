"""``algocyte-agent sim``: the simulated analyzer as a process of its own."""

from __future__ import annotations

import argparse

from agent.commands.common import load_selected_config
from agent.commands.pending import not_available


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "sim",
        parents=[common],
        help="run the simulated analyzer (virtual GRBL controller and camera) as its own process",
        description=(
            "Start the simulated analyzer and print how to reach it: the pseudo-terminal of the "
            "virtual GRBL controller and the address of the virtual camera. Runs until stopped."
        ),
    )
    p.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    load_selected_config(args, fallback="embedded")
    raise not_available("the simulated analyzer")
