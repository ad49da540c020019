"""Stage errors that do not depend on the controller's protocol.

GRBL-specific refusals and alarms are in ``drivers.stage.grbl_codes``; these are what
any stage driver raises for the same situations, so callers can handle them alike.
"""

from __future__ import annotations

from drivers.errors import DeviceError


class StageRequestError(DeviceError):
    """A request the stage will not carry out as asked (checked before anything is sent)."""


class StageLimitError(StageRequestError):
    """A move whose target lies outside the configured soft limits; nothing was sent."""


class StageNotHomedError(DeviceError):
    """The stage position is not known (after power-up, a reset or stop()): home it first."""


class StageStoppedError(DeviceError):
    """The operation was interrupted because stop() was called."""


class ControllerResetError(DeviceError):
    """The controller reset itself unexpectedly (banner seen mid-command): position is lost."""
