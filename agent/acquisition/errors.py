"""Errors of the acquisition: a scan that failed or was cancelled says what it had done.

They are ``AnalyzerError``s so the CLI and the daemon report them as one line; a
``ScanError`` carries the partial ``ScanResult`` (fields scanned so far, timing) so
nothing already captured is lost when the stage or camera fails mid-scan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.errors import AnalyzerError

if TYPE_CHECKING:
    from agent.acquisition.scanner import ScanResult


class AcquisitionError(AnalyzerError):
    """Base of the acquisition's errors."""


class Cancelled(AcquisitionError):
    """A long operation (autofocus, calibration, scan) was cancelled on request."""


class CalibrationError(AcquisitionError):
    """Exposure or white balance could not be brought to the configured target."""


class ScanError(AcquisitionError):
    """The scan stopped before its end; ``result`` holds what was scanned until then."""

    def __init__(self, message: str, result: ScanResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class ScanCancelled(ScanError):
    """The scan was cancelled on request; ``result`` holds what was scanned until then."""
