"""Webhook events as the service stores them: each verified event once, with what became of it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class EventStatus(enum.StrEnum):
    APPLIED = "applied"
    IGNORED = "ignored"
    REJECTED = "rejected"
    PENDING = "pending"  # waits for the payment, invoice or subscription it refers to
    DUPLICATE = "duplicate"  # never stored: what a repeated delivery is answered


@dataclass(frozen=True)
class WebhookEvent:
    event_id: str
    type: str
    payload: bytes
    received_at: datetime


@dataclass(frozen=True)
class StoredEvent:
    event: WebhookEvent
    account_id: str
    status: EventStatus
    reason: str | None
