"""Signed but malformed Stripe events: each is answered 2xx and stored as rejected with a reason
(a redelivery of the same body can never help), through the real endpoint. Before the strict
readers, each of these crashed the adapter with a 500, which Stripe retries for days."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_events import deliver, event, event_id, paid_checkout

from support import RunningMeter, new_id


def _checkout(change: Callable[[dict[str, Any]], None]) -> bytes:
    data = json.loads(paid_checkout(new_id()))
    change(data["data"]["object"])
    return json.dumps(data).encode()


def _refund(amount: object) -> bytes:
    return event("charge.refunded", lambda c: c.update(payment_intent="pi_x", amount_refunded=amount))


def _refund_with_intent(intent: str) -> bytes:
    return event("charge.refunded", lambda c: c.update(payment_intent=intent, amount_refunded=100))


def _subscription(change: Callable[[dict[str, Any]], None], **top: Any) -> bytes:
    def fields(sub: dict[str, Any]) -> None:
        sub["metadata"] = {"account_id": new_id(), "plan_id": "pro"}
        sub["items"]["data"][0].update(current_period_start=1_790_000_000, current_period_end=1_792_600_000)
        change(sub)

    return event("customer.subscription.updated", fields, **top)


MALFORMED = {
    "tokens_superscript_two": _checkout(lambda s: s["metadata"].update(tokens="²")),
    "tokens_thirty_digits": _checkout(lambda s: s["metadata"].update(tokens="1" * 30)),
    "tokens_arabic_indic_digits": _checkout(lambda s: s["metadata"].update(tokens="١٠٠٠")),
    "amount_total_10e30": _checkout(lambda s: s.update(amount_total=10**30)),
    "amount_total_true": _checkout(lambda s: s.update(amount_total=True)),
    "amount_refunded_10e30": _refund(10**30),
    "amount_refunded_text": _refund("900"),
    "subscription_without_items": _subscription(lambda s: s["items"].update(data=[])),
    "event_created_10e12": _subscription(lambda s: None, created=10**12),
    "period_start_10e12": _subscription(lambda s: s["items"]["data"][0].update(current_period_start=10**12)),
    "metadata_not_an_object": _checkout(lambda s: s.update(metadata=["account_id"])),
    "currency_with_nul": _checkout(lambda s: s.update(currency="usd\x00")),
    "payment_intent_with_nul": _refund_with_intent("pi_\x00"),
}


@pytest.mark.parametrize("name", MALFORMED)
async def test_malformed_event_is_stored_as_rejected_and_answered_2xx(
    meter: RunningMeter, engine: AsyncEngine, name: str
) -> None:
    payload = MALFORMED[name]
    status, body = await deliver(meter.webhook_url, payload)
    assert (status, body["status"]) == (200, "rejected"), body
    assert body["reason"].startswith("malformed event")
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT status, reason FROM webhook_events WHERE event_id = :e"), {"e": event_id(payload)}
            )
        ).one()
    assert row.status == "rejected" and row.reason.startswith("malformed event")
    again = await deliver(meter.webhook_url, payload)  # the same body: the same answer, no crash
    assert (again[0], again[1]["status"]) == (200, "rejected")
