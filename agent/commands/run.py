"""``algocyte-agent run``: the daemon (systemd service)."""

from __future__ import annotations

import argparse

from agent.commands.common import load_selected_config
from agent.commands.pending import not_available


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        help="run the analyzer daemon (what the systemd service starts)",
        description=(
            "Run the analyzer as a long-lived service: connect the stage and camera, load the "
            "models, publish availability and results over MQTT and take commands. Reads "
            "/etc/algocyte/agent.yaml unless --config is given; never falls back to the simulator."
        ),
    )
    p.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    load_selected_config(args, fallback="system")
    raise not_available("the daemon")
