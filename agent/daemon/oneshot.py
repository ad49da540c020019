"""One sample through the whole service, then stop: what ``algocyte-agent demo`` and the
end-to-end evaluation run.

It is the daemon (same state machine, worker, health checks, MQTT publishing,
report delivery) with the sample started in-process instead of by an MQTT command,
and it stops once the report is issued (and, with a broker, acknowledged).
"""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass

from agent.config import AgentConfig
from agent.daemon.progress import ServiceListener
from agent.daemon.sample_runner import SampleOutcome
from agent.daemon.service import open_service
from agent.transport.commands import StartSampleArgs

_log = logging.getLogger(__name__)


@dataclass
class OneShotResult:
    outcome: SampleOutcome | None
    """None when the run was stopped before the sample could issue its report."""
    delivered: bool
    """The results were acknowledged by the broker (False without one)."""


def run_one_sample(
    config: AgentConfig,
    request: StartSampleArgs,
    *,
    listener: ServiceListener | None = None,
    wake: queue.SimpleQueue[str] | None = None,
    stop_reason: str = "stopped before the end of the sample",
) -> OneShotResult:
    """Run ``request`` on the service built from ``config`` and stop.

    ``wake``: put ``"stop"`` on it (e.g. from a signal handler) to abort the sample;
    its aborted report then carries ``stop_reason``.
    """
    wake = wake if wake is not None else queue.SimpleQueue()
    service = open_service(config, wake=wake)
    outcomes: list[SampleOutcome] = []

    class Done(ServiceListener):
        def on_outcome(self, outcome: SampleOutcome) -> None:
            outcomes.append(outcome)
            service.request_stop()

    delivered = False
    try:
        service.add_listener(Done())
        if listener is not None:
            service.add_listener(listener)
        service.start()
        service.start_sample(request)
        service.serve()
        if outcomes and config.mqtt.enabled:
            delivered = service.drain_outbox(config.mqtt.stop_timeout_s + 5.0)
            if not delivered:
                _log.warning("the results were not acknowledged by the broker in time")
    finally:
        service.shutdown(stop_reason)
    return OneShotResult(outcomes[0] if outcomes else None, delivered)
