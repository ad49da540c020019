"""``algocyte-agent demo``: one sample on the simulated analyzer, end to end.

It runs the daemon's own service (the GRBL driver on the virtual controller's
pseudo-terminal, the virtual camera on a slide built from a cell library, the
shipped models, the report store) for one sample, shows its progress on stderr and
prints the differential. With an MQTT broker listening where the config points
(localhost:1883 for the embedded config) it publishes state, progress and the
results there exactly as the daemon does; otherwise it says so and runs without.

stdout carries only the result: the table, or with ``--json`` the report's JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import signal
import socket
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from agent.commands.common import load_selected_config
from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.logsetup import setup_logging

EXIT_ABORTED = 1
EXIT_INTERRUPTED = 130
BROKER_PROBE_S = 1.0
"""How long to wait for the broker's TCP port to answer before running without it."""


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="analyse one sample on the simulated analyzer and print the differential",
        description=(
            "Run one sample end to end on the simulated analyzer (virtual stage, slide and "
            "camera) with the shipped models, and print the differential. Uses the embedded "
            "simulator configuration unless --config is given. Publishes to the configured "
            "MQTT broker when one is listening."
        ),
    )
    p.add_argument(
        "--cells",
        type=Path,
        metavar="DIR",
        help="cell library for the virtual slide (one subfolder per class); default: the demo library",
    )
    p.add_argument("--target", type=int, metavar="N", help="white cells to count (100-500)")
    p.add_argument("--seed", type=int, metavar="S", help="seed of the virtual slide")
    p.add_argument(
        "--json", action="store_true", help="print the report as JSON on stdout, nothing else"
    )
    p.set_defaults(func=execute)


def demo_config(args: argparse.Namespace, config: AgentConfig) -> AgentConfig:
    """``config`` with the command line's slide and target applied (validated)."""
    if config.simulator is None:
        raise ConfigError(
            "the demo runs on the simulated analyzer, but the configuration has no simulator "
            "section; add 'simulator: {}' or run without --config"
        )
    data = config.model_dump(mode="python")
    if args.cells is not None:
        if not args.cells.is_dir():
            raise ConfigError(f"--cells {args.cells}: not a directory")
        data["simulator"]["cell_library"] = args.cells
    if args.seed is not None:
        if args.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {args.seed}")
        data["simulator"]["seed"] = args.seed
    if args.target is not None:
        if not 100 <= args.target <= 500:
            raise ConfigError(f"--target must be 100-500 white cells, got {args.target}")
        data["acquisition"]["target_wbc"] = args.target
    return AgentConfig.model_validate(data)


def broker_listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=BROKER_PROBE_S):
            return True
    except OSError:
        return False


def execute(args: argparse.Namespace) -> int:
    config = load_selected_config(args, fallback="embedded")
    if not args.log_level and not args.debug:
        # Log lines would tear the progress bar; warnings and errors still show.
        setup_logging("warning")
    config = demo_config(args, config)
    mqtt = config.mqtt
    where = f"{mqtt.host}:{mqtt.port}"
    if not mqtt.enabled:
        note(
            f"MQTT is disabled in the configuration; the report is kept in {config.storage.state_dir}"
        )
    elif broker_listening(mqtt.host, mqtt.port):
        note(f"publishing to the MQTT broker at {where} ({mqtt.topic_root}/{config.device_id}/#)")
    else:
        note(
            f"no MQTT broker at {where}: running without one (the report is kept in "
            f"{config.storage.state_dir})"
        )
        config = config.model_copy(update={"mqtt": mqtt.model_copy(update={"enabled": False})})

    # Imported here so the other subcommands never pay for the daemon's imports.
    from agent.commands.progress_bar import ProgressBar
    from agent.daemon.oneshot import run_one_sample
    from agent.report.table import render_table
    from agent.transport.commands import StartSampleArgs

    sample_id = "DEMO-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    wake: queue.SimpleQueue[str] = queue.SimpleQueue()
    interrupted = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        interrupted.set()
        wake.put("stop")

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    bar = ProgressBar(sys.stderr)
    log_handlers = logging.getLogger().handlers
    for log_handler in log_handlers:
        log_handler.addFilter(bar.before_log)
    try:
        result = run_one_sample(
            config,
            StartSampleArgs(sample_id=sample_id),
            listener=bar,
            wake=wake,
            stop_reason="demo interrupted",
        )
    finally:
        bar.close()
        for log_handler in log_handlers:
            log_handler.removeFilter(bar.before_log)
        for s, handler in previous.items():
            signal.signal(s, handler)
    outcome = result.outcome
    if outcome is None:
        note("stopped before the sample issued its report")
        return EXIT_INTERRUPTED
    report = outcome.report
    if args.json:
        sys.stdout.write(json.dumps(report.to_document(), indent=2) + "\n")
    else:
        sys.stdout.write(render_table(report) + "\n")
    sys.stdout.flush()
    if config.mqtt.enabled:
        if result.delivered:
            note(f"results {report.result_id} delivered to {where}")
        else:
            note(f"results {report.result_id} not yet acknowledged by {where}; kept in the outbox")
    if interrupted.is_set():
        return EXIT_INTERRUPTED
    return EXIT_ABORTED if report.status == "aborted" else 0


def note(message: str) -> None:
    sys.stderr.write(f"algocyte-agent demo: {message}\n")
    sys.stderr.flush()
