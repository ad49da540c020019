"""The daemon's health check: can it take a sample and deliver the result right now?

Checked: the stage answers a status query, the camera captures a frame of the
configured size, the model files still hash to their cards, the state directory
takes a durable write, the outbox answers. The hardware is probed only while it is
free; during a sample the sample itself exercises it and reports its faults.

A failed hardware probe gets one recovery attempt (reopen the controller's link or
the camera) before it is reported, so an unplugged-and-replugged USB cable heals on
the next check without a restart.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.daemon.hardware import Hardware
from agent.errors import AnalyzerError
from agent.transport.outbox import Outbox
from agent.vision.model_card import CARD_SUFFIX, ModelCard, verified_model_path
from drivers.errors import DeviceError

_log = logging.getLogger(__name__)

PROBE_FILE = ".health-probe"


@dataclass(frozen=True)
class Problem:
    """One failed check: ``code`` is 'stage', 'camera', 'models', 'storage' or 'outbox'."""

    code: str
    message: str


@dataclass(frozen=True)
class HealthReport:
    problems: tuple[Problem, ...]
    hardware_checked: bool
    """False when the hardware was busy and only the rest was checked."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return "all checks passed" if self.hardware_checked else "checks passed (hardware busy)"
        return "; ".join(f"{p.code}: {p.message}" for p in self.problems)


@dataclass(frozen=True)
class ModelFile:
    """A loaded model's card and where it lives, to re-check its hash."""

    card: ModelCard
    card_path: Path


def model_files(
    models_dir: Path, cards: Sequence[ModelCard], names: Sequence[str]
) -> list[ModelFile]:
    return [
        ModelFile(card, models_dir / f"{name}{CARD_SUFFIX}")
        for card, name in zip(cards, names, strict=True)
    ]


class HealthChecker:
    """Runs the checks; see the module docstring."""

    def __init__(
        self,
        hardware: Hardware,
        models: Sequence[ModelFile],
        state_dir: Path,
        outbox: Outbox,
    ) -> None:
        self._hw = hardware
        self._models = tuple(models)
        self._state_dir = state_dir
        self._outbox = outbox

    def check(
        self, *, hardware: bool = True, recover: bool = True, wait_s: float = 0.0
    ) -> HealthReport:
        """Run every check; the hardware only if ``hardware`` and it is free within ``wait_s``."""
        problems: list[Problem] = []
        checked = False
        got = hardware and (
            self._hw.lock.acquire(timeout=wait_s) if wait_s > 0 else self._hw.lock.acquire(False)
        )
        if got:
            try:
                checked = True
                problems += self._hardware(recover)
            finally:
                self._hw.lock.release()
        for code, check in (
            ("models", self._check_models),
            ("storage", self._check_storage),
            ("outbox", self._check_outbox),
        ):
            try:
                check()
            except (AnalyzerError, OSError) as e:
                problems.append(Problem(code, str(e)))
        return HealthReport(tuple(problems), checked)

    def _hardware(self, recover: bool) -> list[Problem]:
        problems = []
        for code, probe, repair in (
            ("stage", self._hw.probe_stage, self._hw.reconnect_stage),
            ("camera", self._hw.probe_camera, self._hw.reopen_camera),
        ):
            problem = _attempt(code, probe)
            if problem is not None and recover:
                _log.warning("health check: %s; trying to recover", problem.message)
                repaired = _attempt(code, repair)
                problem = repaired or _attempt(code, probe)
                if problem is None:
                    _log.info("health check: the %s works again", code)
            if problem is not None:
                problems.append(problem)
        return problems

    def _check_models(self) -> None:
        for model in self._models:
            verified_model_path(model.card_path, model.card)

    def _check_storage(self) -> None:
        probe = self._state_dir / PROBE_FILE
        try:
            with probe.open("wb") as f:
                f.write(b"ok")
                f.flush()
                os.fsync(f.fileno())
            probe.unlink()
        except OSError as e:
            raise AnalyzerError(
                f"the state directory {self._state_dir} does not take a write: {e.strerror or e}"
            ) from e

    def _check_outbox(self) -> None:
        self._outbox.count()


def _attempt(code: str, step: Callable[[], object]) -> Problem | None:
    try:
        step()
    except (DeviceError, AnalyzerError) as e:
        return Problem(code, str(e))
    return None
