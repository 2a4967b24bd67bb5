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
from datetime import datetime
from typing import Any

from meter.domain.errors import ErrorCategory, MeterError
from meter.domain.events import EventStatus, WebhookEvent
from meter.service import invoices, reversals
from meter.service.context import Meter
from meter.service.ports import Store

# Refusals no later delivery can change: the waiting event is stored as rejected.
_FINAL = (ErrorCategory.INVALID, ErrorCategory.ALREADY_EXISTS, ErrorCategory.NOT_FOUND)

# What a kind of waiting request does once what it waits for has arrived, in that transaction
# (the account's row locked): (meter, store, account_id, request, now) -> None. It checks before
# it writes, so a refusal leaves nothing half done.
Apply = Callable[[Meter, Store, str, dict[str, Any], datetime], Awaitable[None]]


def _appliers() -> Mapping[str, Apply]:
    """By kind (read when called: those modules store their requests through this one)."""
    return {
        "reversal": reversals.apply_waiting,
        "invoice": invoices.apply_waiting_invoice,
        "payment_link": invoices.apply_waiting_link,
    }


def payment_intent_key(payment_intent: str) -> str:
    return f"payment_intent:{payment_intent}"


def invoice_key(invoice_ref: str) -> str:
    return f"invoice:{invoice_ref}"


def subscription_key(subscription_ref: str) -> str:
    return f"subscription:{subscription_ref}"


async def wait_for(
    store: Store,
    key: str,
    kind: str,
    request: Mapping[str, Any],
    event: WebhookEvent,
    arrived: Callable[[Store], Awaitable[bool]],
    reason: str,
) -> bool:
    """Store `request` until `key` arrives; False (storing nothing) if it has arrived meanwhile,
    in which case the caller applies it now."""
    await store.lock_key(key)
    if await arrived(store):
        return False
    now = await store.now()
    await store.insert_waiting(key, event.event_id, kind, request, now)
    await store.record_event("", event, EventStatus.PENDING, reason[:1000], now)
    return True


async def release(meter: Meter, store: Store, account_id: str, key: str, now: datetime) -> None:
    """Apply what waits for `key`, which this transaction just brought for `account_id`. A request
    the service refuses for good is recorded as rejected, like any event; the rest stay applied."""
    await store.lock_key(key)
    for kind, event_id, request in await store.take_waiting(key):
        status, reason = EventStatus.APPLIED, None
        try:
            await _appliers()[kind](meter, store, account_id, request, now)
        except MeterError as refused:
            if refused.category not in _FINAL:
                raise
            status, reason = EventStatus.REJECTED, f"{refused.reason}: {refused.message}"[:1000]
        await store.adopt_event(account_id, event_id, status, reason, now)
