"""The clock the store reads: maildir file names, internal dates, UIDVALIDITY values.

Injected so tests can pin or move time (including backwards: unique names must stay unique
when the clock jumps, which is why names also carry a sequence number and random bits).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch (UTC), with sub-second precision."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FixedClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.value = start

    def now(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


SYSTEM_CLOCK = SystemClock()
