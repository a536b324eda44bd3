"""Reconnect delays for live sources."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with multiplicative jitter, capped at ``maximum``.

    The defaults (0.1 s doubling to 1 s) keep retrying a lost camera at least once a second, so the agent
    has frames again within ~2 s of the camera's return (one delay plus the connect time), while a camera
    that stays down costs one connection attempt per second. Jitter spreads the reconnects of many agents
    after a shared outage.
    """

    def __init__(self, initial: float = 0.1, maximum: float = 1.0, factor: float = 2.0, jitter: float = 0.2) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"need 0 < initial <= maximum, got initial={initial}, maximum={maximum}")
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._attempt = 0
        self._random = random.Random()  # not for security: only spreads retries in time

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; grows with each call until ``reset``."""
        base = min(self.maximum, self.initial * self.factor**self._attempt)
        if base < self.maximum:  # stop counting once capped (no float overflow on a long outage)
            self._attempt += 1
        delay = base * self._random.uniform(1 - self.jitter, 1 + self.jitter)
        return min(self.maximum, delay)

    def reset(self) -> None:
        """Call after a successful frame: the next failure starts again from ``initial``."""
        self._attempt = 0


LOG_EVERY_NTH_FAILURE = 20  # failures in a row: the first is said, then every 20th, not one line per retry


def worth_saying(failures: int) -> bool:
    """Whether the ``failures``-th failure in a row of a retried thing (a source, a stream, the tail) is logged."""
    return failures == 1 or failures % LOG_EVERY_NTH_FAILURE == 0
