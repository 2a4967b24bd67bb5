"""Webhooks out: where balance events are sent, and what became of each sending.

An endpoint is a URL with its own signing secret (Standard Webhooks: `whsec_` and base64) and the
event types it wants (none: every type). Each event an endpoint wants is one delivery: pending
until the endpoint answers 2xx (delivered), retried on the schedule meanwhile, and dead once the
schedule is spent (kept, listed, and sent again on an operator's redeliver). An endpoint that
does not answer in time is backed off (sent nothing for a while, its deliveries waiting); one
that answers 410 Gone is disabled (Standard Webhooks: the receiver says it wants no more) until
an operator resumes it.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from meter.domain.balance_events import BalanceEvent, EventType
from meter.domain.errors import InvalidField

SECRET_PREFIX = "whsec_"
_ENDPOINT_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # the whole name (fullmatch: no newline after it)
# Standard Webhooks' suggested schedule after the first attempt: 5 s, 5 min, 30 min, 2 h, 5 h,
# 10 h, 10 h (about 28 hours in all, then the delivery is dead).
DEFAULT_RETRY_SECONDS = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class Outcome(StrEnum):
    """How one attempt ended."""

    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # any other answer, or none: tried again on the schedule
    TIMED_OUT = "timed_out"  # no answer within the timeout: tried again, and the endpoint backed off
    GONE = "gone"  # 410 Gone: tried again once resumed; the endpoint is disabled


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    error: str | None = None  # what went wrong, as the operator reads it (None: delivered)


DELIVERED = Attempt(Outcome.DELIVERED)


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    url: str
    event_types: tuple[str, ...]  # empty: every type
    paused: bool  # sent nothing meanwhile; its deliveries wait
    created_at: datetime
    disabled_at: datetime | None = None  # when it answered 410 Gone: sent nothing until resumed
    disabled_reason: str | None = None
    timeouts: int = 0  # attempts in a row without an answer in time
    backoff_until: datetime | None = None  # sent nothing before then (after a timeout)

    @property
    def state(self) -> str:
        if self.disabled_at is not None:
            return "disabled"
        if self.paused:
            return "paused"
        return "backing-off" if self.timeouts else "active"


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery: what to send, where, signed with what, and which attempt it is."""

    endpoint_id: str
    url: str
    secret: str
    event: BalanceEvent
    attempt: int  # 1 for the first
    endpoint_timeouts: int = 0  # the endpoint's attempts in a row without an answer, when claimed


@dataclass(frozen=True)
class DeliveryState:
    endpoint_id: str
    account_id: str
    sequence: int
    event_id: str
    type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None  # None: queued behind the account's earlier pending delivery
    last_error: str | None
    delivered_at: datetime | None


@dataclass(frozen=True)
class RetrySchedule:
    """How long to wait after each failed attempt; once spent, the delivery is dead."""

    delays: tuple[float, ...] = DEFAULT_RETRY_SECONDS

    def after(self, attempts: int) -> float | None:
        """The wait after the `attempts`-th failed attempt, or None: give up."""
        return self.delays[attempts - 1] if attempts <= len(self.delays) else None


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(24)).decode()


def endpoint_id(value: str) -> str:
    if not _ENDPOINT_ID.fullmatch(value):
        raise InvalidField("endpoint_id", "1 to 64 letters, digits, '_', '.' or '-'")
    return value


def event_types(values: list[str]) -> tuple[str, ...]:
    known = {t.value for t in EventType}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidField("event_types", f"unknown: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return tuple(sorted(set(values)))
