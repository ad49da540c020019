"""What every subcommand shares: the common options and how the config is chosen."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

from agent.config import DEFAULT_CONFIG_PATH, AgentConfig, default_config, load_config
from agent.errors import ConfigError
from agent.logsetup import setup_logging


def common_options(suppress_defaults: bool) -> argparse.ArgumentParser:
    """Options accepted both before and after the subcommand name.

    The copy attached to subcommands uses SUPPRESS defaults so that an option given
    before the subcommand is not overwritten by the subparser's default.
    """
    parser = argparse.ArgumentParser(add_help=False)

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress_defaults else value

    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=default(None),
        help=f"configuration file (default for 'run': {DEFAULT_CONFIG_PATH})",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=default(None),
        help="override the configured log level",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="show tracebacks for errors (and log at debug level)",
    )
    return parser


def effective_log_level(args: argparse.Namespace, config: AgentConfig | None) -> str:
    """Command line beats config; ``--debug`` implies debug logging."""
    if args.debug:
        return "debug"
    if args.log_level:
        return str(args.log_level)
    return config.log_level if config is not None else "warning"


def load_selected_config(
    args: argparse.Namespace, fallback: Literal["system", "embedded"]
) -> AgentConfig:
    """The config named by ``--config``, else the system file or the embedded simulator.

    ``run`` falls back to the system file only: a real analyzer must never start on
    the simulator because its config file is missing.
    """
    if args.config is not None:
        config = load_config(args.config)
    elif fallback == "system":
        if not DEFAULT_CONFIG_PATH.exists():
            raise ConfigError(
                f"{DEFAULT_CONFIG_PATH}: configuration file not found; pass --config FILE "
                "(or try 'algocyte-agent demo' for the simulated analyzer)"
            )
        config = load_config(DEFAULT_CONFIG_PATH)
    else:
        config = default_config()
    setup_logging(effective_log_level(args, config))
    return config
