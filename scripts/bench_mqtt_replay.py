"""Benchmark: outbox write cost, live delivery latency, and reconnect + replay after an outage.

Run: .venv/bin/python scripts/bench_mqtt_replay.py [--results 200] [--inflight 10]

Starts its own mosquitto (persistent, so a subscriber with a persistent session sees
everything), submits results while the broker is down, starts it again and times
how long the link takes to reconnect and to have every replayed message acknowledged.
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
from tests.broker import running_broker, started_link, wait_for, watching


class NoCommands:
    def handle(self, command: str, args: CommandArgs) -> Any:
        return None


def documents(result_id: str) -> list[tuple[str, bytes]]:
    pad = "x" * 8000  # a report with its provenance is several kilobytes
    report = json.dumps({"result_id": result_id, "status": "final", "pad": pad}).encode()
    bundle = json.dumps({"resourceType": "Bundle", "id": result_id, "pad": pad}).encode()
    return [("results", report), ("results/fhir", bundle)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=int, default=200)
    parser.add_argument("--inflight", type=int, default=10)
    args = parser.parse_args()
    n = args.results
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with (
            running_broker(root / "broker", persistent=True) as broker,
            watching(broker.port, "algocyte/+/results", persistent=True) as watcher,
            started_link(
                broker.port, root / "state", NoCommands(), outbox_inflight=args.inflight
            ) as link,
        ):
            live = []
            for i in range(20):
                t = time.perf_counter()
                link.submit_result(f"live-{i}", documents(f"live-{i}"))
                wait_for(lambda: link.outbox.count() == 0, 30, "live PUBACKs")
                live.append(time.perf_counter() - t)

            broker.stop()
            wait_for(lambda: not link.connected, 30, "the outage to be noticed")
            writes = []
            for i in range(n):
                t = time.perf_counter()
                link.submit_result(f"r-{i}", documents(f"r-{i}"))
                writes.append(time.perf_counter() - t)
            time.sleep(1.0)

            up = time.perf_counter()
            broker.start()
            wait_for(lambda: link.connected, 60, "the reconnect")
            reconnect = time.perf_counter() - up
            wait_for(lambda: link.outbox.count() == 0, 300, "the replay")
            replay = time.perf_counter() - up
            watcher.wait_topic("algocyte/dev-1/results", 20 + n, timeout=60)
            ids = [m.json()["result_id"] for m in watcher.on("algocyte/dev-1/results")]
            assert len(ids) == len(set(ids)) == 20 + n, "duplicates or losses"

    print(f"results: {n} (2 messages of ~8 kB each), outbox_inflight={args.inflight}")
    print(f"outbox write per result (fsync): median {statistics.median(writes) * 1e3:.1f} ms")
    print(f"live submit -> both PUBACKs:      median {statistics.median(live) * 1e3:.1f} ms")
    print(f"broker back -> connected:         {reconnect:.2f} s")
    print(f"broker back -> {2 * n} replayed messages acknowledged: {replay:.2f} s")
    print(
        f"replay rate: {2 * n / (replay - reconnect):.0f} messages/s; each result_id exactly once"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
