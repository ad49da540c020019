"""The ETA of a running sample: counting rate since the first field, capped by the time budget."""

from __future__ import annotations

import io
import logging

from agent.commands.progress_bar import ProgressBar
from agent.daemon.progress import EtaEstimator, SampleProgress
from agent.transport.payloads import StatePayload


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_eta_from_the_rate_after_the_first_field() -> None:
    clock = FakeClock()
    eta = EtaEstimator(200, 270.0, clock)
    eta.start()
    clock.t += 40.0  # survey and calibration
    assert eta.update(10) is None  # the first field: no rate yet
    clock.t += 10.0
    assert eta.update(30) == 85.0  # 20 cells in 10 s, 170 to go
    clock.t += 10.0
    assert eta.update(50) == 75.0


def test_eta_is_capped_by_the_time_budget_and_zero_at_target() -> None:
    clock = FakeClock()
    eta = EtaEstimator(200, 100.0, clock)
    eta.start()
    assert eta.update(1) is None
    clock.t += 50.0
    assert eta.update(2) == 50.0  # one cell in 50 s: the budget ends first
    clock.t += 10.0
    assert eta.update(2) == 40.0  # nothing new: the budget left
    assert eta.update(200) == 0.0


def progress(found: int, eta: float | None) -> SampleProgress:
    return SampleProgress(
        "S-1", fields_scanned=found // 3, wbc_found=found, target_wbc=100, eta_s=eta, elapsed_s=65.0
    )


def test_progress_lines_without_a_terminal() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar.on_state(StatePayload(state="busy", sample_id="S-1", phase="scanning"))
    bar.on_progress(progress(12, None))
    bar.on_progress(progress(15, 40.0))  # within PLAIN_EVERY_S: not printed
    bar.on_progress(progress(100, 0.0))  # done: always printed
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines == [
        "algocyte-agent demo: scanning",
        "algocyte-agent demo: 12/100 white cells, 4 fields, 1:05 elapsed, ETA --:--",
        "algocyte-agent demo: 100/100 white cells, 33 fields, 1:05 elapsed, ETA 0:00",
    ]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_redraws_one_line() -> None:
    stream = Tty()
    bar = ProgressBar(stream)
    bar.on_progress(progress(50, 83.0))
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\r\x1b[2K")
    assert "[############------------] 50/100 white cells, 16 fields" in text
    assert "ETA 1:23" in text
    assert text.endswith("\n") and text.count("\n") == 1


def test_a_log_line_clears_the_bar_first() -> None:
    stream = Tty()
    bar = ProgressBar(stream)
    bar.on_progress(progress(50, 83.0))
    drawn = len(stream.getvalue())
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "careful", None, None)
    assert bar.before_log(record) is True
    assert stream.getvalue()[drawn:] == "\r\x1b[2K"
    bar.close()
    assert not stream.getvalue().endswith("\n")  # nothing left drawn to end
