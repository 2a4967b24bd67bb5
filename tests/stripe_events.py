"""Stripe events for tests: the fixtures in tests/fixtures/stripe, with the fields a scenario needs
set here (the fixtures' README says which are placeholders), signed the way Stripe signs them."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import stripe

from support import WEBHOOK_SECRET

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stripe"


def raw_fixture(event_type: str) -> bytes:
    """The fixture file's exact bytes."""
    return (FIXTURES / f"{event_type}.json").read_bytes()


def event(event_type: str, change: Callable[[dict[str, Any]], None] | None = None, **top: Any) -> bytes:
    """A fixture with a fresh event id; `change` edits data.object, `top` the envelope."""
    data = json.loads(raw_fixture(event_type))
    data["id"] = f"evt_test_{uuid.uuid4().hex[:16]}"
    if change:
        change(data["data"]["object"])
    data.update(top)
    return json.dumps(data).encode()


def event_id(payload: bytes) -> str:
    return str(json.loads(payload)["id"])


def paid_checkout(
    account: str,
    *,
    pack: str = "pack_1000_tokens",
    tokens: str = "1000",
    amount: int = 100,
    session: str = "",
    intent: str = "",
    event_type: str = "checkout.session.completed",
    payment_status: str = "paid",
) -> bytes:
    def set_fields(obj: dict[str, Any]) -> None:
        obj["metadata"] = {"type": "token_pack_purchase", "account_id": account, "pack_id": pack, "tokens": tokens}
        obj["payment_status"], obj["status"] = payment_status, "complete"
        obj["amount_total"], obj["currency"] = amount, "usd"
        # Each call is a payment of its own unless told which: a payment is credited once.
        obj["id"] = session or f"cs_test_{uuid.uuid4().hex}"
        obj["payment_intent"] = intent or f"pi_test_{uuid.uuid4().hex[:24]}"

    return event(event_type, set_fields)


def signature(payload: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(
        payload.decode(), secret, timestamp=timestamp or int(time.time())
    )


async def deliver(url: str, payload: bytes, header: str | None = "sign") -> tuple[int, dict[str, Any]]:
    """POST like Stripe does; header "sign" signs the payload with the test secret."""
    headers = {"Content-Type": "application/json"}
    if header == "sign":
        headers["Stripe-Signature"] = signature(payload)
    elif header is not None:
        headers["Stripe-Signature"] = header
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=io.BytesIO(payload), headers=headers) as response,
    ):
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except json.JSONDecodeError:
            return response.status, {"text": text}  # aiohttp's own answers (413) are plain text


PRICES = {"starter": "price_starter_monthly", "pro": "price_pro_monthly", "business": "price_business_monthly"}


def subscription_event(
    kind: str,
    account: str,
    plan: str,
    *,
    created: int,
    start: int,
    end: int,
    price: str | None = None,
    metadata_plan: str | None = None,
    sub: str = "",
    status: str = "active",
) -> bytes:
    """customer.subscription.<kind> for `account`, sold at `plan`'s price in the packaged catalog
    (or `price`), with the billing period [start, end) on its item as API 2026 puts it."""

    def set_fields(obj: dict[str, Any]) -> None:
        obj["id"] = sub or obj["id"]
        obj["metadata"] = {"account_id": account, "plan_id": plan if metadata_plan is None else metadata_plan}
        obj["status"] = status
        item = obj["items"]["data"][0]
        item.update(current_period_start=start, current_period_end=end)
        item["price"]["id"] = price or PRICES[plan]
        item["subscription"] = obj["id"]

    return event(f"customer.subscription.{kind}", set_fields, created=created)


def invoice_line(
    start: int, end: int, price: str, amount: int, *, proration: bool = False, sub: str = ""
) -> dict[str, Any]:
    """A line of an invoice as API 2026 writes it: the price under `pricing`, the subscription and
    whether it is a proration under `parent` (an invoice item's for a proration)."""
    kind = "invoice_item_details" if proration else "subscription_item_details"
    return {
        "object": "line_item",
        "id": f"il_{uuid.uuid4().hex[:14]}",
        "amount": amount,
        "currency": "usd",
        "period": {"start": start, "end": end},
        "pricing": {"type": "price_details", "price_details": {"price": price, "product": "prod_meter"}},
        "parent": {"type": kind, kind: {"subscription": sub, "proration": proration}},
    }


def invoice_paid(
    sub: str,
    lines: list[dict[str, Any]],
    *,
    account: str | None,
    amount: int,
    invoice: str = "",
    reason: str = "subscription_cycle",
) -> bytes:
    """invoice.paid of subscription `sub` (its metadata naming `account`, or null when None), from
    the invoice fixture with the fields a paid subscription invoice has."""

    def set_fields(obj: dict[str, Any]) -> None:
        obj["id"] = invoice or f"in_{uuid.uuid4().hex[:14]}"
        obj.update(status="paid", billing_reason=reason, amount_paid=amount, amount_due=amount, currency="usd")
        metadata = None if account is None else {"account_id": account}
        obj["parent"] = {
            "type": "subscription_details",
            "subscription_details": {"subscription": sub, "metadata": metadata},
        }
        obj["lines"]["data"] = [line | {"invoice": obj["id"]} for line in lines]

    return event("invoice.paid", set_fields)


def invoice_payment_failed(
    sub: str,
    lines: list[dict[str, Any]],
    *,
    account: str,
    amount: int,
    invoice: str,
    attempts: int,
    next_attempt: int | None,
) -> bytes:
    """invoice.payment_failed: no fixture has one; it carries the same Invoice object as
    invoice.paid (the fixture's), open and unpaid, with Stripe's attempt_count and
    next_payment_attempt (null once its retries are over)."""
    paid = json.loads(invoice_paid(sub, lines, account=account, amount=amount, invoice=invoice))
    paid["type"] = "invoice.payment_failed"
    paid["data"]["object"].update(
        status="open",
        paid=False,
        amount_paid=0,
        attempted=True,
        attempt_count=attempts,
        next_payment_attempt=next_attempt,
    )
    return json.dumps(paid).encode()


def invoice_payment_paid(invoice: str, intent: str, amount: int) -> bytes:
    """invoice_payment.paid: no fixture has one; the object has the fields Stripe's API reference
    gives an InvoicePayment."""
    payment = {
        "id": f"inpay_{uuid.uuid4().hex[:14]}",
        "object": "invoice_payment",
        "amount_paid": amount,
        "amount_requested": amount,
        "created": int(time.time()),
        "currency": "usd",
        "invoice": invoice,
        "is_default": True,
        "livemode": False,
        "payment": {"type": "payment_intent", "payment_intent": intent},
        "status": "paid",
        "status_transitions": {"canceled_at": None, "paid_at": int(time.time())},
    }
    envelope = json.loads(raw_fixture("invoice.paid"))
    envelope.update(id=f"evt_test_{uuid.uuid4().hex[:16]}", type="invoice_payment.paid", data={"object": payment})
    return json.dumps(envelope).encode()


def refunded(intent: str, cumulative: int, amount: int, *, charge: str = "", invoice: str = "") -> bytes:
    """charge.refunded: `cumulative` of the charge's `amount` refunded so far (`invoice`: the charge
    names it, as API versions before 2025-03-31 do)."""

    def set_fields(obj: dict[str, Any]) -> None:
        obj.update(payment_intent=intent, amount=amount, amount_refunded=cumulative, refunded=cumulative == amount)
        obj["id"] = charge or obj["id"]
        if invoice:
            obj["invoice"] = invoice

    return event("charge.refunded", set_fields)


def disputed(intent: str, status: str, *, dispute: str, kind: str = "charge.dispute.created") -> bytes:
    """A dispute event of `kind` carrying the dispute's `status` at that moment."""
    return event(
        "charge.dispute.created", lambda d: d.update(payment_intent=intent, status=status, id=dispute), type=kind
    )
