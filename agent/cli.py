"""The ``algocyte-agent`` command line.

Errors the agent expects (bad config, missing hardware, unreadable input) end as one
line on stderr and a non-zero exit; a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from agent import __version__
from agent.commands import analyze, bench, classify, demo, run, sim, validate_config, version
from agent.commands.common import common_options
from agent.errors import AnalyzerError, ConfigError
from drivers.errors import DeviceError

EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE
EXIT_INTERRUPTED = 130

_log = logging.getLogger(__name__)

_COMMANDS = (run, demo, sim, classify, analyze, validate_config, bench, version)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="algocyte-agent",
        parents=[common_options(suppress_defaults=False)],
        description=(
            "White-cell differential analyzer: scans a stained blood smear, finds and classifies "
            "white cells on the device, and delivers the report over MQTT (JSON and FHIR R4)."
        ),
        epilog="Run 'algocyte-agent COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"algocyte-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = common_options(suppress_defaults=True)
    for command in _COMMANDS:
        command.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        sys.stderr.write("algocyte-agent: interrupted\n")
        return EXIT_INTERRUPTED
    except (AnalyzerError, DeviceError) as e:
        if args.debug:
            raise
        for line in str(e).splitlines() or [type(e).__name__]:
            sys.stderr.write(f"algocyte-agent: error: {line}\n")
        return EXIT_CONFIG if isinstance(e, ConfigError) else EXIT_ERROR
    except Exception as e:
        if args.debug:
            raise
        _log.debug("internal error", exc_info=True)
        sys.stderr.write(
            f"algocyte-agent: internal error: {type(e).__name__}: {e} "
            "(run again with --debug for the traceback)\n"
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
