"""Which meter action a verified Stripe event asks for. Pure: no I/O, so every rule is testable
on the fixtures alone.

| event | action |
|---|---|
| checkout.session.completed, metadata.type=token_pack_purchase, payment_status=paid | Credit |
| checkout.session.completed, not yet paid | Ignore (async_payment_succeeded will credit) |
| checkout.session.async_payment_succeeded | Credit (same payment_ref: credited once) |
| charge.refunded | Reverse refund, by cumulative amount_refunded |
| charge.dispute.created / charge.dispute.closed (won) | Reverse dispute / dispute_won |
| customer.subscription.created / updated | Plan (plan and billing period) |
| customer.subscription.deleted | Plan free, allowance ends now |
| invoice.paid for a subscription period | Grant that period's allowance |
| anything else | Ignore |
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from meter.webhooks import reading
from meter.webhooks.reading import Malformed

TOKEN_PACK_PURCHASE = "token_pack_purchase"
FREE_PLAN = "free"


@dataclass(frozen=True)
class Credit:
    account_id: str
    pack_id: str
    tokens: int
    amount_minor: int
    currency: str
    payment_ref: str
    payment_intent: str


@dataclass(frozen=True)
class Reverse:
    kind: str  # "refund" | "dispute" | "dispute_won"
    payment_intent: str
    amount_minor: int
    reversal_ref: str


@dataclass(frozen=True)
class Plan:
    account_id: str
    plan_id: str  # as the metadata names it ("" when it does not): the service checks it
    period: tuple[datetime, datetime] | None
    subscription_ref: str
    event_time: datetime
    expire_allowance_now: bool = False
    stripe_prices: tuple[str, ...] = ()  # what the subscription is sold at: its plan


@dataclass(frozen=True)
class Grant:
    subscription_ref: str
    invoice_ref: str
    period: tuple[datetime, datetime]
    account_id: str


@dataclass(frozen=True)
class Ignore:
    reason: str
    account_id: str = ""


@dataclass(frozen=True)
class Reject:
    """Authentic, but unusable as sent (e.g. malformed metadata): stored as rejected."""

    reason: str
    account_id: str = ""


Action = Credit | Reverse | Plan | Grant | Ignore | Reject


def action_for(event: dict[str, Any]) -> Action:
    """The action, or Reject when a field is malformed: no body, however odd, raises."""
    try:
        return _action(event)
    except Malformed as malformed:
        return Reject(f"malformed event: {malformed}", _account_hint(event))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
        # A shape no reader anticipated: still authentic and still unusable, so rejected.
        return Reject(f"malformed event: {type(error).__name__}: {error}"[:500], _account_hint(event))


def _account_hint(event: dict[str, Any]) -> str:
    """The account an unusable event names, if it names one plainly (to file it under)."""
    try:
        metadata = event["data"]["object"].get("metadata")
        value = metadata.get("account_id") if isinstance(metadata, dict) else None
    except (KeyError, TypeError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def _action(event: dict[str, Any]) -> Action:
    kind, obj = event["type"], event["data"]["object"]
    if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        return _checkout(obj)
    if kind == "charge.refunded":
        return _refund(obj)
    if kind in ("charge.dispute.created", "charge.dispute.closed"):
        return _dispute(kind, obj)
    if kind in ("customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted"):
        return _subscription(kind, obj, reading.timestamp(event, "created"))
    if kind == "invoice.paid":
        return _invoice(obj)
    return Ignore(f"{kind} is not handled")


def _checkout(session: dict[str, Any]) -> Action:
    metadata = reading.mapping(session, "metadata")
    account = reading.text(metadata, "account_id")
    if metadata.get("type") != TOKEN_PACK_PURCHASE:
        return Ignore("checkout session is not a token pack purchase", account)
    if session.get("payment_status") != "paid":
        return Ignore(f"checkout session payment_status is {session.get('payment_status')!r}"[:200], account)
    if not account or not reading.text(metadata, "pack_id"):
        return Reject("metadata.account_id and metadata.pack_id are required", account)
    return Credit(
        account_id=account,
        pack_id=reading.text(metadata, "pack_id"),
        tokens=reading.digits(metadata, "tokens"),
        amount_minor=reading.whole(session, "amount_total"),
        currency=reading.text(session, "currency"),
        payment_ref=reading.text(session, "id"),
        payment_intent=reading.ref(session, "payment_intent"),
    )


def _refund(charge: dict[str, Any]) -> Action:
    if charge.get("invoice"):
        return Ignore("refund of an invoice payment, not of a token pack")
    intent = reading.ref(charge, "payment_intent")
    if not intent:
        return Ignore("charge has no payment_intent: not a Checkout purchase")
    refunded = reading.whole(charge, "amount_refunded")
    if refunded == 0:
        return Ignore("charge.refunded with nothing refunded")
    return Reverse("refund", intent, refunded, reading.text(charge, "id"))


def _dispute(kind: str, dispute: dict[str, Any]) -> Action:
    intent = reading.ref(dispute, "payment_intent")
    if not intent:
        return Ignore("dispute has no payment_intent: not a Checkout purchase")
    if kind == "charge.dispute.created":
        return Reverse("dispute", intent, 0, reading.text(dispute, "id"))
    if dispute.get("status") == "won":
        return Reverse("dispute_won", intent, 0, reading.text(dispute, "id"))
    return Ignore(f"dispute closed as {dispute.get('status')!r}: the frozen tokens stay frozen"[:200])


def _subscription(kind: str, subscription: dict[str, Any], created: datetime) -> Action:
    metadata = reading.mapping(subscription, "metadata")
    account, ref = reading.text(metadata, "account_id"), reading.text(subscription, "id")
    if not account:
        return Ignore("subscription has no metadata.account_id")
    ended = kind == "customer.subscription.deleted" or subscription.get("status") in ("canceled", "incomplete_expired")
    if ended:
        return Plan(account, FREE_PLAN, None, "", created, expire_allowance_now=True)
    items = reading.listed(subscription, "items")
    if not items:
        raise Malformed("subscription has no items")
    period = _subscription_period(subscription, items)
    if period is None:
        return Reject("subscription has no current period", account)
    prices = tuple(price for item in items if (price := reading.ref(item, "price")))
    return Plan(account, reading.text(metadata, "plan_id"), period, ref, created, stripe_prices=prices)


def _subscription_period(subscription: dict[str, Any], items: list[dict[str, Any]]) -> tuple[datetime, datetime] | None:
    """Newer API versions put the period on the subscription's items, older ones on itself."""
    for source in (items[0], subscription):
        found = reading.period(source, "current_period_start", "current_period_end")
        if found is not None:
            return found
    return None


def _invoice(invoice: dict[str, Any]) -> Action:
    parent = reading.mapping(invoice, "parent")
    details = reading.mapping(parent, "subscription_details") if parent.get("type") == "subscription_details" else {}
    ref = reading.ref(invoice, "subscription") or reading.ref(details, "subscription")
    if not ref:
        return Ignore("invoice.paid without a subscription")
    account = reading.text(reading.mapping(details, "metadata"), "account_id")
    for line in reading.listed(invoice, "lines"):
        parent = reading.mapping(line, "parent")
        if (
            line.get("subscription") == ref
            or reading.mapping(parent, "subscription_item_details").get("subscription") == ref
        ):
            period = reading.period(reading.mapping(line, "period"), "start", "end")
            if period is not None:
                return Grant(ref, reading.text(invoice, "id"), period, account)
    return Reject("invoice.paid has no subscription line with a period", account)
