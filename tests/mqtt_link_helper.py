"""An MqttLink in its own process, driven line by line, so tests can SIGKILL it.

Usage: python tests/mqtt_link_helper.py '{"port": 1883, "state_dir": "...", "device_id": "d"}'

stdin lines: ``wait-connected`` | ``submit <result_id>`` | ``stop``; each is answered
on stdout with one line (``connected``, ``stored <result_id>``, ``stopped``).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from agent.transport.commands import CommandArgs
from agent.transport.config import MqttConfig
from agent.transport.link import MqttLink
from agent.transport.outbox import Outbox


class IdleHandler:
    """Answers every command with an empty object (the tests here are about delivery)."""

    def handle(self, command: str, args: CommandArgs) -> Any:
        return {}


def result_document(result_id: str) -> bytes:
    return json.dumps({"result_id": result_id, "sample_id": "S-1", "status": "final"}).encode()


def main() -> int:
    settings = json.loads(sys.argv[1])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    config = MqttConfig(
        host="127.0.0.1",
        port=settings["port"],
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
        client_id=f"helper-{settings['device_id']}",
    )
    outbox = Outbox.in_state_dir(Path(settings["state_dir"]))
    link = MqttLink(config, settings["device_id"], outbox, IdleHandler())
    link.start()
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "wait-connected":
            print("connected" if link.wait_connected(20) else "not-connected", flush=True)
        elif words[0] == "submit":
            link.submit_result(words[1], [("results", result_document(words[1]))])
            print(f"stored {words[1]}", flush=True)
        elif words[0] == "stop":
            link.stop()
            outbox.close()
            print("stopped", flush=True)
            return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
