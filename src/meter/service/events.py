"""Webhook events: stored once, in the same transaction as their effect.

A use case given a source event claims it first thing in its transaction: a replayed event id
(applied or ignored before) changes nothing. When the use case refuses the request as invalid,
the event is stored as rejected with the reason (a retry cannot fix it; an operator can replay
it once the cause, e.g. the catalog, is fixed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from meter.domain import ids
from meter.domain.errors import ErrorCategory, EventNotFound, InvalidField, MeterError
from meter.domain.events import EventStatus, StoredEvent, WebhookEvent
from meter.service.context import Meter
from meter.service.ports import Store, WebhookEvents

T = TypeVar("T")

# Refusals a redelivery cannot change: the event is stored as rejected.
_FINAL_REFUSALS = (ErrorCategory.INVALID, ErrorCategory.ALREADY_EXISTS)
MAX_EVENT_ID_LENGTH = 255
MAX_PAYLOAD_BYTES = 1_000_000


def check_event(event: WebhookEvent | None) -> None:
    if event is None:
        return
    ids.idempotency_key(event.event_id, "source_event.event_id")
    if not event.type or len(event.type) > MAX_EVENT_ID_LENGTH:
        raise InvalidField("source_event.type", f"is required, at most {MAX_EVENT_ID_LENGTH} characters")
    if len(event.payload) > MAX_PAYLOAD_BYTES:
        raise InvalidField("source_event.payload", f"at most {MAX_PAYLOAD_BYTES} bytes")


async def claim(store: WebhookEvents, account_id: str, event: WebhookEvent | None, now: datetime) -> bool:
    """True when the effect should be applied (no event, or its first delivery)."""
    return event is None or await store.claim_event(account_id, event, now)


def status(event: WebhookEvent | None, claimed: bool) -> EventStatus | None:
    if event is None:
        return None
    return EventStatus.APPLIED if claimed else EventStatus.DUPLICATE


async def rejecting(meter: Meter, account_id: str, event: WebhookEvent | None, run: Callable[[], Awaitable[T]]) -> T:
    """Run a use case; if it refuses for good, store its source event as rejected, then re-raise."""
    try:
        return await run()
    except MeterError as error:
        if event is not None and error.category in _FINAL_REFUSALS:
            await record(meter, account_id=account_id, event=event, status=EventStatus.REJECTED, reason=_why(error))
        raise


def _why(error: MeterError) -> str:
    return f"{error.reason}: {error.message}"[:1000]


def event_account(account_id: str) -> str:
    """The account an event is filed under: '' when it names none (or a malformed one)."""
    try:
        return ids.account_id(account_id) if account_id else ""
    except InvalidField:
        return ""


async def record(
    meter: Meter, *, account_id: str, event: WebhookEvent, status: EventStatus, reason: str
) -> EventStatus:
    check_event(event)
    if status not in (EventStatus.IGNORED, EventStatus.REJECTED):
        raise InvalidField("status", "must be EVENT_STATUS_IGNORED or EVENT_STATUS_REJECTED")
    if status is EventStatus.REJECTED and not reason:
        raise InvalidField("reason", "is required for a rejected event")
    account = event_account(account_id)

    async def work(store: Store) -> EventStatus:
        return await store.record_event(account, event, status, reason[:1000] or None, await store.now())

    return await meter.storage.transaction(work)


async def get(meter: Meter, *, event_id: str) -> StoredEvent:
    ids.idempotency_key(event_id, "event_id")

    async def work(store: WebhookEvents) -> StoredEvent | None:
        return await store.stored_event(event_id)

    stored = await meter.storage.transaction(work)
    if stored is None:
        raise EventNotFound(event_id)
    return stored
