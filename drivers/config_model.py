"""The base every configuration model derives from.

Lives in ``drivers`` (not ``agent``) because drivers own their config sections and
must not import the agent. Strict on purpose: an unknown key is far more often a
typo that would silently fall back to a default than a deliberate extension.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A frozen pydantic model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
