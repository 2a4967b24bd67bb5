"""Per-caller request rates, one limit across every replica, without a row every call writes.

Each replica counts the calls it admits per (caller, method, second) in memory, and every sync
interval writes its own counts to PostgreSQL (its own rows) and reads the other replicas'. A call
is admitted while this replica's count plus the others' last-read counts stay within the
caller's rate. Nothing is written per call; the error is the others' calls since their last sync
(see docs/operate.md, Callers and permissions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from meter.domain.callers import Caller
from meter.domain.errors import RateLimited
from meter.domain.limits import CALLER_RATE

Key = tuple[str, str, int]  # caller, method, second (Unix time)


@dataclass(frozen=True)
class Count:
    caller: str
    method: str
    second: int
    count: int


class CallerRates:
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._mine: dict[Key, int] = {}
        self._theirs: dict[Key, int] = {}

    def admit(self, caller: Caller, method: str) -> None:
        """Count the call, or refuse it RATE_LIMITED (callerRate) until the next second."""
        rate = caller.rate(method)
        if rate is None:
            return
        now = self._now()
        key = (caller.name, method, math.floor(now))
        mine = self._mine.get(key, 0)
        if mine + self._theirs.get(key, 0) + 1 > rate:
            raise RateLimited(CALLER_RATE, rate, key[2] + 1 - now)
        self._mine[key] = mine + 1

    def mine(self) -> list[Count]:
        """This replica's counts of the current and the previous second, to write; older ones
        are forgotten."""
        current = math.floor(self._now())
        for key in [key for key in self._mine if key[2] < current - 1]:
            del self._mine[key]
        return [Count(caller, method, second, count) for (caller, method, second), count in self._mine.items()]

    def theirs(self, counts: Iterable[Count]) -> None:
        """The other replicas' counts, as just read (they replace what was read before)."""
        self._theirs = {(c.caller, c.method, c.second): c.count for c in counts}

    def others(self, caller: str, method: str) -> int:
        """The other replicas' count of this second, as last read."""
        return self._theirs.get((caller, method, math.floor(self._now())), 0)

    @property
    def second(self) -> int:
        return math.floor(self._now())
