"""Requests that wait for what they refer to: Stripe delivers events in any order.

A refund can arrive before the purchase it refunds, an invoice before the subscription it bills,
an invoice's payment before the invoice. Answering those 5xx until the other event lands would
have Stripe retry for days (and give up on the ones that never land: another product's payments
on the same Stripe account). Instead the request is stored, its event is stored as `pending` and
answered 2xx, and the transaction that brings what it waits for applies it, once.

Two transactions could miss each other: one storing a request after checking that its payment is
not there, the other inserting the payment after checking that nothing waits. Both take the same
lock on the key first (`Store.lock_key`), so one of them sees the other's work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from meter.domain.errors import ErrorCategory, MeterError
from meter.domain.events import EventStatus, WebhookEvent
from meter.service.context import Meter
from meter.service.ports import Store

F = TypeVar("F")
T = TypeVar("T")

# Refusals no later delivery can change: the waiting event is stored as rejected.
_FINAL = (ErrorCategory.INVALID, ErrorCategory.ALREADY_EXISTS, ErrorCategory.NOT_FOUND)


def payment_intent_key(payment_intent: str) -> str:
    return f"payment_intent:{payment_intent}"


def invoice_key(invoice_ref: str) -> str:
    return f"invoice:{invoice_ref}"


def subscription_key(subscription_ref: str) -> str:
    return f"subscription:{subscription_ref}"


@dataclass(frozen=True)
class Waiting:
    """How a request waits: for `key`, as a request of `kind`, from `event`."""

    key: str
    kind: str
    request: Mapping[str, Any]
    event: WebhookEvent
    reason: str  # what the pending event says it waits for


async def now_or_when_it_arrives(
    meter: Meter,
    find: Callable[[Store], Awaitable[F | None]],
    apply: Callable[[F], Awaitable[T]],
    waiting: Waiting | None,
    pending: T,
    missing: MeterError,
) -> T:
    """`apply` the request to what `find` finds; when it is not there yet, store the request to
    wait for it (if it may wait: it came with its event) and return `pending`, else raise
    `missing`. Storing re-checks under the key's lock, so if the awaited thing landed meanwhile,
    the request is applied now instead."""
    for _ in range(3):
        found = await meter.storage.transaction(find)
        if found is not None:
            return await apply(found)
        if waiting is None:
            break
        if await meter.storage.transaction(lambda store: _store(store, waiting, find)):
            return pending
    raise missing


async def _store(store: Store, waiting: Waiting, find: Callable[[Store], Awaitable[object | None]]) -> bool:
    await store.lock_key(waiting.key)
    if await find(store) is not None:
        return False
    now = await store.now()
    await store.insert_waiting(waiting.key, waiting.event.event_id, waiting.kind, waiting.request, now)
    await store.record_event("", waiting.event, EventStatus.PENDING, waiting.reason[:1000], now)
    return True


async def release(meter: Meter, store: Store, account_id: str, key: str, now: datetime) -> None:
    """Apply what waits for `key`, which this transaction just brought for `account_id`. A request
    the service refuses for good is recorded as rejected, like any event; the rest stay applied."""
    await store.lock_key(key)
    for kind, event_id, request in await store.take_waiting(key):
        status, reason = EventStatus.APPLIED, None
        try:
            await meter.waiting_appliers[kind](meter, store, account_id, request, now)
        except MeterError as refused:
            if refused.category not in _FINAL:
                raise
            status, reason = EventStatus.REJECTED, f"{refused.reason}: {refused.message}"[:1000]
        await store.adopt_event(account_id, event_id, status, reason, now)
