"""Rate limits: how fast an account may start model calls, on top of how much it may spend.

A balance stops an account from spending more than it paid for; these stop one account (or one
runaway agent loop) from flooding the providers and the service within its balance. Each plan in
the catalog may set them; a limit left out is no limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

# The names callers see, in ErrorInfo metadata and GetCatalog (lowerCamelCase, AIP-193).
REQUESTS_PER_MINUTE = "requestsPerMinute"
TOKENS_PER_MINUTE = "tokensPerMinute"
CONCURRENT_HOLDS = "concurrentHolds"
CALLER_RATE = "callerRate"


@dataclass(frozen=True)
class RateLimits:
    requests_per_minute: int | None = None  # Reserves started per minute
    tokens_per_minute: int | None = None  # tokens held by the Reserves started per minute
    concurrent_holds: int | None = None  # open holds at once

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.requests_per_minute, self.tokens_per_minute, self.concurrent_holds))


@dataclass(frozen=True)
class PlanLimits:
    """Every plan's rate limits as columns (0: none), as the database takes them with each call
    that needs them (meter_rate_limits, storage/sql), so that it keeps no copy of the catalog.
    An account's own limits, where set, come before its plan's: the database decides that."""

    plans: list[str]
    requests_per_minute: list[int]
    tokens_per_minute: list[int]
    concurrent_holds: list[int]

    @classmethod
    def of(cls, plans: Mapping[str, RateLimits]) -> PlanLimits:
        return cls(
            list(plans),
            [limits.requests_per_minute or 0 for limits in plans.values()],
            [limits.tokens_per_minute or 0 for limits in plans.values()],
            [limits.concurrent_holds or 0 for limits in plans.values()],
        )


@dataclass(frozen=True)
class RateUsage:
    """What an account has used of its limits: in the current UTC minute, and right now."""

    window_start: datetime  # the minute the counts belong to
    requests: int
    tokens: int
    open_holds: int


WINDOW = timedelta(minutes=1)


@dataclass(frozen=True)
class Headroom:
    """What an account may still start before a limit refuses it (None: no such limit)."""

    requests_this_minute: int | None
    tokens_this_minute: int | None
    holds: int | None
    minute_ends: datetime


def headroom(limits: RateLimits, usage: RateUsage) -> Headroom:
    def left(limit: int | None, used: int) -> int | None:
        return None if limit is None else max(0, limit - used)

    return Headroom(
        left(limits.requests_per_minute, usage.requests),
        left(limits.tokens_per_minute, usage.tokens),
        left(limits.concurrent_holds, usage.open_holds),
        usage.window_start + WINDOW,
    )
