"""Rate limits: how fast an account may start model calls, on top of how much it may spend.

A balance stops an account from spending more than it paid for; these stop one account (or one
runaway agent loop) from flooding the providers and the service within its balance. Each plan in
the catalog may set them; a limit left out is no limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from meter.domain.errors import RateLimited

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

    def over(self, base: RateLimits) -> RateLimits:
        """These limits where set, `base`'s elsewhere (an account's own over its plan's)."""
        return RateLimits(
            self.requests_per_minute or base.requests_per_minute,
            self.tokens_per_minute or base.tokens_per_minute,
            self.concurrent_holds or base.concurrent_holds,
        )


@dataclass(frozen=True)
class RateUsage:
    """What an account has used of its limits: in the current UTC minute, and right now."""

    window_start: datetime  # the minute the counts belong to
    requests: int
    tokens: int
    open_holds: int
    soonest_expiry: datetime | None = None  # of its open holds, when it has any


WINDOW = timedelta(minutes=1)


def check(limits: RateLimits, usage: RateUsage, amount: int, now: datetime, sweep_seconds: float) -> None:
    """Refuse a Reserve of `amount` tokens that would go over a limit, naming the limit that
    keeps it out longest and the delay after which the same Reserve can pass: the end of the
    minute for the per-minute limits; for open holds, the soonest expiry plus one sweep (a Commit
    or Release may free one sooner). A Reserve bigger than the tokens-per-minute limit itself can
    never pass, and is refused without a delay."""
    refusals: list[RateLimited] = []
    window_left = max(0.0, (usage.window_start + WINDOW - now).total_seconds())
    rpm, tpm, holds = limits.requests_per_minute, limits.tokens_per_minute, limits.concurrent_holds
    if rpm is not None and usage.requests + 1 > rpm:
        refusals.append(RateLimited(REQUESTS_PER_MINUTE, rpm, window_left))
    if tpm is not None and usage.tokens + amount > tpm:
        if amount > tpm:
            raise RateLimited(TOKENS_PER_MINUTE, tpm, None)
        refusals.append(RateLimited(TOKENS_PER_MINUTE, tpm, window_left))
    if holds is not None and usage.open_holds + 1 > holds:
        soonest = usage.soonest_expiry
        wait = max(0.0, (soonest - now).total_seconds()) if soonest else 0.0
        refusals.append(RateLimited(CONCURRENT_HOLDS, holds, wait + sweep_seconds))
    if refusals:
        raise max(refusals, key=lambda refusal: refusal.retry_after or 0.0)


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
