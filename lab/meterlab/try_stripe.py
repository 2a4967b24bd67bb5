"""`meter try-stripe`: a pack purchase, or its refund, delivered to a running meter exactly as
Stripe would deliver it, without a Stripe account: a real Stripe payload (stripe_samples/) with
the purchase's fields set, signed with METER_STRIPE_WEBHOOK_SECRET the way Stripe signs, posted to
meter's webhook endpoint. Then the account's balance, read over gRPC, shows what it did."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any

import aiohttp
import stripe

from meter.catalog import Pack
from meter.client import MeterClient


@dataclass(frozen=True)
class Delivery:
    event_id: str
    event_type: str
    status: int
    answer: dict[str, Any]


def sample(event_type: str) -> dict[str, Any]:
    """A real Stripe event of this type (its envelope and object)."""
    text = resources.files("meterlab").joinpath("stripe_samples", f"{event_type}.json").read_text(encoding="utf-8")
    event: dict[str, Any] = json.loads(text)
    event["id"] = f"evt_try_{uuid.uuid4().hex[:24]}"
    event["created"] = int(time.time())
    return event


def purchase(account: str, pack: Pack) -> tuple[bytes, str]:
    """checkout.session.completed for `pack`, paid, for `account`; and its PaymentIntent id."""
    event = sample("checkout.session.completed")
    intent = f"pi_try_{uuid.uuid4().hex[:24]}"
    event["data"]["object"].update(
        id=f"cs_try_{uuid.uuid4().hex}",
        payment_intent=intent,
        payment_status="paid",
        status="complete",
        amount_total=pack.price_minor,
        currency=pack.currency,
        metadata={"type": "token_pack_purchase", "account_id": account, "pack_id": pack.id, "tokens": str(pack.tokens)},
    )
    return json.dumps(event).encode(), intent


def refund(intent: str, amount_minor: int, refunded_minor: int, currency: str) -> bytes:
    """charge.refunded: `refunded_minor` of the charge's `amount_minor` refunded so far."""
    event = sample("charge.refunded")
    event["data"]["object"].update(
        id=f"ch_try_{uuid.uuid4().hex[:24]}",
        payment_intent=intent,
        amount=amount_minor,
        amount_captured=amount_minor,
        amount_refunded=refunded_minor,
        refunded=refunded_minor >= amount_minor,
        currency=currency,
    )
    return json.dumps(event).encode()


async def deliver(url: str, payload: bytes, secret: str) -> Delivery:
    """POST as Stripe does: the body, and its Stripe-Signature made with the endpoint's secret."""
    header = stripe.WebhookSignature.generate_signature_header(payload.decode(), secret, timestamp=int(time.time()))
    headers = {"Content-Type": "application/json", "Stripe-Signature": header}
    async with aiohttp.ClientSession() as session, session.post(url, data=payload, headers=headers) as response:
        text = await response.text()
    try:
        answer = json.loads(text)
    except ValueError:
        answer = {"status": "error", "reason": text.strip()}
    event = json.loads(payload)
    return Delivery(event["id"], event["type"], response.status, answer)


async def balance_line(target: str, token: str | None, account: str) -> str:
    async with MeterClient(target, token=token) as meter:
        balance = await meter.get_balance(account_id=account)
    return (
        f"{account}: purchased {balance.purchased_remaining:,} left, allowance {balance.allowance_remaining:,} left, "
        f"available {balance.available:,}"
    )
