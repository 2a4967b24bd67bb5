"""Webhooks out: where balance events are sent, and what became of each sending.

An endpoint is a URL with its own signing secret (Standard Webhooks: `whsec_` and base64) and the
event types it wants (none: every type). Each event an endpoint wants is one delivery: pending
until the endpoint answers 2xx (delivered), retried on the schedule meanwhile, and dead once the
schedule is spent (kept, listed, and sent again on an operator's redeliver).
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
MAX_URL_LENGTH = 2048
_ENDPOINT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Standard Webhooks' suggested schedule after the first attempt: 5 s, 5 min, 30 min, 2 h, 5 h,
# 10 h, 10 h (about 28 hours in all, then the delivery is dead).
DEFAULT_RETRY_SECONDS = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    url: str
    event_types: tuple[str, ...]  # empty: every type
    paused: bool  # sent nothing meanwhile; its deliveries wait
    created_at: datetime


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery: what to send, where, signed with what, and which attempt it is."""

    endpoint_id: str
    url: str
    secret: str
    event: BalanceEvent
    attempt: int  # 1 for the first


@dataclass(frozen=True)
class DeliveryState:
    endpoint_id: str
    account_id: str
    sequence: int
    event_id: str
    type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
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
    if not _ENDPOINT_ID.match(value):
        raise InvalidField("endpoint_id", "1 to 64 letters, digits, '_', '.' or '-'")
    return value


def endpoint_url(value: str) -> str:
    if not value.startswith(("https://", "http://")) or len(value) > MAX_URL_LENGTH or any(c.isspace() for c in value):
        raise InvalidField("url", f"an http:// or https:// URL of at most {MAX_URL_LENGTH} characters")
    return value


def event_types(values: list[str]) -> tuple[str, ...]:
    known = {t.value for t in EventType}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidField("event_types", f"unknown: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return tuple(sorted(set(values)))
