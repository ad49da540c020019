"""Subcommands whose feature has not landed yet.

They exist so the command-line surface is complete and documented, and say plainly
that the feature is missing instead of printing anything that looks like a result.
"""

from __future__ import annotations

from agent.errors import AnalyzerError


def not_available(feature: str) -> AnalyzerError:
    """The error a pending subcommand raises."""
    return AnalyzerError(f"{feature} is not available in this build yet")
