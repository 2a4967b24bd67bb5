"""Rate limits: how fast an account may start model calls, on top of how much it may spend.

A balance stops an account from spending more than it paid for; these stop one account (or one
runaway agent loop) from flooding the providers and the service within its balance. Each plan in
the catalog may set them; a limit left out is no limit.
"""

from __future__ import annotations

from dataclasses import dataclass

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
