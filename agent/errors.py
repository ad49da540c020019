"""The agent's error hierarchy.

Every error the agent expects to meet is an ``AnalyzerError`` (or a driver's
``DeviceError``), so the CLI and the daemon can turn it into one clear line for
the operator instead of a traceback. Layers translate errors from the layer below
with ``raise ... from e`` so the cause is kept for ``--debug``.
"""

from __future__ import annotations


class AnalyzerError(Exception):
    """Base of every error the agent reports to an operator as one line."""


class ConfigError(AnalyzerError):
    """The configuration file is missing, unreadable or invalid."""


class ModelLoadError(AnalyzerError):
    """A model file is missing, corrupt, or does not match its model card."""


class InputError(AnalyzerError):
    """Input supplied by a user (an image, a request) cannot be used."""
