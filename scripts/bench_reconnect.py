"""Benchmark: how long a result waits after the broker comes back from an outage.

Run: .venv/bin/python scripts/bench_reconnect.py [--outages 1 2 5 10 20 40 60] [--trials 3]

Starts its own mosquitto and an ``MqttLink`` with the default reconnect settings
(``mqtt.reconnect_min_s``/``reconnect_max_s``, or ``--min``/``--max``). For each
outage length and trial: stops the broker (SIGTERM), submits a result while it is
down, starts the broker again after the outage length, and measures the time from
the broker listening again to the result's PUBACK (its outbox row removed). The
worst case is bounded by ``reconnect_max_s`` plus the connect and publish time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.transport.commands import CommandArgs
from agent.transport.config import MqttConfig
from tests.broker import running_broker, started_link, wait_for


class NoCommands:
    def handle(self, command: str, args: CommandArgs) -> Any:
        return None


def result(result_id: str) -> list[tuple[str, bytes]]:
    return [("results", json.dumps({"result_id": result_id, "status": "final"}).encode())]


def main() -> int:
    defaults = MqttConfig()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--outages", type=float, nargs="+", default=[1, 2, 5, 10, 20, 40, 60])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--min", type=float, default=defaults.reconnect_min_s)
    parser.add_argument("--max", type=float, default=defaults.reconnect_max_s)
    args = parser.parse_args()
    rows: list[tuple[float, list[float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with (
            running_broker(root / "broker") as broker,
            started_link(
                broker.port,
                root / "state",
                NoCommands(),
                reconnect_min_s=args.min,
                reconnect_max_s=args.max,
            ) as link,
        ):
            n = 0
            for outage in args.outages:
                delays = []
                for _ in range(args.trials):
                    n += 1
                    wait_for(lambda: link.connected, 120, "the link to connect")
                    down = time.monotonic()
                    broker.stop()
                    wait_for(lambda: not link.connected, 30, "the link to notice the outage")
                    link.submit_result(f"r-{n}", result(f"r-{n}"))
                    time.sleep(max(0.0, down + outage - time.monotonic()))
                    broker.start()  # returns once the broker listens again
                    back = time.monotonic()
                    wait_for(lambda: link.outbox.count() == 0, 3 * args.max + 30, "the PUBACK")
                    delays.append(time.monotonic() - back)
                rows.append((outage, delays))
                print(
                    f"outage {outage:5.1f} s: delivered {min(delays):5.2f} / "
                    f"{statistics.median(delays):5.2f} / {max(delays):5.2f} s "
                    "(min / median / max) after the broker was back",
                    flush=True,
                )
    worst = max(max(d) for _, d in rows)
    print(
        f"reconnect_min_s={args.min:g} reconnect_max_s={args.max:g}, {args.trials} trial(s) per "
        f"outage: worst delay from broker return to PUBACK {worst:.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
