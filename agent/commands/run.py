"""``algocyte-agent run``: the daemon (systemd service, ``Type=notify``).

Start-up problems (bad config, models that fail their hash, a stage or camera that
does not answer, a failing start-up health check) end the process with one line on
stderr and a non-zero status; systemd restarts it within the unit's limits. Once
READY=1 is sent it runs until SIGTERM or SIGINT, then aborts a running sample (its
report says "daemon stopped"), publishes availability ``stopped`` and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
from types import FrameType

from agent.commands.common import load_selected_config
from agent.daemon.sdnotify import SystemdNotifier
from agent.errors import AnalyzerError
from drivers.errors import DeviceError

_log = logging.getLogger(__name__)


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
    config = load_selected_config(args, fallback="system")
    # Imported here so the other subcommands never pay for the daemon's imports.
    from agent.daemon.service import open_service

    wake: queue.SimpleQueue[str] = queue.SimpleQueue()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # SimpleQueue.put is reentrant: safe in a signal handler.
        wake.put("stop")

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    notifier = SystemdNotifier()
    try:
        try:
            service = open_service(config, notifier=notifier, wake=wake)
        except (AnalyzerError, DeviceError) as e:
            notifier.status(f"failed to start: {e}")
            raise
        try:
            try:
                service.start()
            except (AnalyzerError, DeviceError) as e:
                notifier.status(f"failed to start: {e}")
                raise
            service.serve()
            _log.info("stop requested")
            notifier.stopping("stopping: aborting any running sample, going offline")
        finally:
            service.shutdown()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        notifier.close()
    return 0
