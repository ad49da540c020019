"""Errors raised by hardware drivers.

``drivers`` never imports ``agent``; the agent treats every ``DeviceError`` as an
operator-facing error just like its own ``AnalyzerError``.
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base of every hardware error: the message is meant for the operator."""


class DeviceConnectionError(DeviceError):
    """The device cannot be reached, or the link was lost (USB unplugged, port closed)."""


class DeviceTimeoutError(DeviceError):
    """The device did not answer within the configured time."""


class ProtocolError(DeviceError):
    """The device answered something the protocol does not allow (garbage, wrong firmware)."""


class UnsupportedFeatureError(DeviceError):
    """The selected backend cannot do what was asked (or its library is not installed)."""
