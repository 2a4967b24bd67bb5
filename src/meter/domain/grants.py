"""Grants: the parts an account's balance is made of, drawn in one order.

Every account has two pools, shown as grants: the month's allowance (it expires at the month's
end) and purchased tokens (they never expire). An account may also have grants of its own
(Grant): promotional or goodwill tokens with a priority and an optional expiry, each on bucket
rows of its own named `grant:<id>`. Reserve draws them in one order, priority (lowest first),
then the soonest expiry, then the oldest; a hold records what it took from each, and gives back
to exactly those (meter_reserve, meter_take, meter_settle). What a grant has left at its expiry
expires, by the sweeper or by the first call that finds it due (meter_end_grants); what a hold
gives back to it after that expires too. This module holds what Python decides: whether a request
is acceptable, and how a pool's name reads.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from meter.domain import ids
from meter.domain.amounts import require_tokens
from meter.domain.errors import InvalidField

GRANT_POOL_PREFIX = "grant:"
MAX_GRANT_TOKENS = 2**62
MAX_PRIORITY = 1_000_000
MAX_REASON_LENGTH = 500
LONGEST_EXPIRY = timedelta(days=3653)  # ten years


class GrantSource(enum.StrEnum):
    ALLOWANCE = "allowance"  # the month's allowance pool
    PURCHASE = "purchase"  # the purchased pool
    PROMOTION = "promotion"
    ROLLOVER = "rollover"
    ADJUSTMENT = "adjustment"


GRANTABLE = (GrantSource.PROMOTION, GrantSource.ADJUSTMENT)  # what the Grant RPC may give


def grant_pool(grant_id: int) -> str:
    """The bucket rows' (and ledger entries') pool of an account's own grant."""
    return f"{GRANT_POOL_PREFIX}{grant_id}"


def grant_id_of(pool: str) -> int:
    """The grant a pool name is (0: the allowance or purchased pool, or the debt)."""
    return int(pool.removeprefix(GRANT_POOL_PREFIX)) if pool.startswith(GRANT_POOL_PREFIX) else 0


@dataclass(frozen=True)
class GrantRequest:
    account_id: str
    request_id: str
    tokens: int
    source: GrantSource
    priority: int
    expires_at: datetime | None
    reason: str

    def checked(self, now: datetime) -> GrantRequest:
        ids.account_id(self.account_id)
        ids.idempotency_key(self.request_id, "request_id")
        require_tokens("tokens", self.tokens, minimum=1, maximum=MAX_GRANT_TOKENS)
        if self.source not in GRANTABLE:
            raise InvalidField("source", "must be GRANT_SOURCE_PROMOTION or GRANT_SOURCE_ADJUSTMENT")
        if not 0 <= self.priority <= MAX_PRIORITY:
            raise InvalidField("priority", f"must be between 0 and {MAX_PRIORITY}")
        if self.expires_at is not None and not now < self.expires_at <= now + LONGEST_EXPIRY:
            raise InvalidField("expires_at", "must be after now and within ten years")
        if not self.reason.strip() or len(self.reason) > MAX_REASON_LENGTH:
            raise InvalidField("reason", f"is required, at most {MAX_REASON_LENGTH} characters")
        return self


@dataclass(frozen=True)
class Grant:
    """A part of a balance as GetBalance lists it: an account's own grant (grant_id > 0), or one of
    its two pools shown as a grant (grant_id 0, tokens 0)."""

    grant_id: int
    source: GrantSource
    remaining: int
    held: int
    priority: int
    expires_at: datetime | None
    tokens: int = 0
    reason: str = ""
    request_id: str = ""
    created_at: datetime | None = None


@dataclass(frozen=True)
class Granted:
    grant: Grant
    created: bool  # False: this request_id granted it before


@dataclass(frozen=True)
class Revoked:
    tokens: int  # what left the balance
    revoked: bool  # False: the grant had ended already
