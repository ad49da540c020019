"""When to try the broker again: quick at first after a loss, then backing off with jitter.

Most outages are short (a broker restart, a Wi-Fi roam), so the first attempts
come within ``reconnect_min_s``; after that the wait doubles up to
``reconnect_max_s``. Every wait is drawn between half and all of its step
("equal jitter"), so analyzers that lost the same broker do not all come back in
the same instant, while the wait still grows. The longest wait is
``reconnect_max_s``: that bounds how long a result waits after the broker is back.

paho's own backoff is a fixed doubling without jitter; the link sets paho's next
delay from here before each wait (``MqttLink``).
"""

from __future__ import annotations

import random
from typing import Final

QUICK_ATTEMPTS: Final = 3
"""Attempts after a loss made within ``reconnect_min_s`` each, before backing off."""

_MAX_DOUBLINGS: Final = 32


class ReconnectBackoff:
    """The delay before each reconnect attempt of one outage; ``reset`` once connected."""

    def __init__(self, min_s: float, max_s: float, *, rng: random.Random | None = None) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError(f"need 0 < min_s <= max_s, got {min_s} and {max_s}")
        self._min = min_s
        self._max = max_s
        self._rng = rng or random.Random()
        self._attempt = 0

    @property
    def longest_s(self) -> float:
        """No wait is longer than this."""
        return self._max

    def reset(self) -> None:
        """Connected: the next outage starts with quick attempts again."""
        self._attempt = 0

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt."""
        k = self._attempt
        self._attempt += 1
        doublings = max(0, k - QUICK_ATTEMPTS + 1)
        step = min(self._max, self._min * 2 ** min(doublings, _MAX_DOUBLINGS))
        return self._rng.uniform(step / 2, step)
