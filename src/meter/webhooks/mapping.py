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
from datetime import UTC, datetime
from typing import Any

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
    plan_id: str
    period: tuple[datetime, datetime] | None
    subscription_ref: str
    event_time: datetime
    expire_allowance_now: bool = False


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
    kind, obj = event["type"], event["data"]["object"]
    if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        return _checkout(obj)
    if kind == "charge.refunded":
        return _refund(obj)
    if kind in ("charge.dispute.created", "charge.dispute.closed"):
        return _dispute(kind, obj)
    if kind in ("customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted"):
        return _subscription(kind, obj, _time(event.get("created")))
    if kind == "invoice.paid":
        return _invoice(obj)
    return Ignore(f"{kind} is not handled")


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _time(value: Any) -> datetime:
    return datetime.fromtimestamp(value if isinstance(value, int) else 0, UTC)


def _checkout(session: dict[str, Any]) -> Action:
    metadata = _metadata(session)
    account = _text(metadata.get("account_id"))
    if metadata.get("type") != TOKEN_PACK_PURCHASE:
        return Ignore("checkout session is not a token pack purchase", account)
    if session.get("payment_status") != "paid":
        return Ignore(f"checkout session payment_status is {session.get('payment_status')!r}", account)
    tokens, amount = metadata.get("tokens"), session.get("amount_total")
    if not account or not _text(metadata.get("pack_id")):
        return Reject("metadata.account_id and metadata.pack_id are required", account)
    if not (isinstance(tokens, str) and tokens.isdigit()) or not isinstance(amount, int):
        return Reject("metadata.tokens must be a whole number and amount_total set", account)
    return Credit(
        account_id=account,
        pack_id=metadata["pack_id"],
        tokens=int(tokens),
        amount_minor=amount,
        currency=_text(session.get("currency")),
        payment_ref=_text(session.get("id")),
        payment_intent=_text(session.get("payment_intent")),
    )


def _refund(charge: dict[str, Any]) -> Action:
    if charge.get("invoice"):
        return Ignore("refund of an invoice payment, not of a token pack")
    intent = _text(charge.get("payment_intent"))
    refunded = charge.get("amount_refunded")
    if not intent:
        return Ignore("charge has no payment_intent: not a Checkout purchase")
    if not isinstance(refunded, int) or refunded <= 0:
        return Ignore("charge.refunded with nothing refunded")
    return Reverse("refund", intent, refunded, _text(charge.get("id")))


def _dispute(kind: str, dispute: dict[str, Any]) -> Action:
    intent = _text(dispute.get("payment_intent"))
    if not intent:
        return Ignore("dispute has no payment_intent: not a Checkout purchase")
    if kind == "charge.dispute.created":
        return Reverse("dispute", intent, 0, _text(dispute.get("id")))
    if dispute.get("status") == "won":
        return Reverse("dispute_won", intent, 0, _text(dispute.get("id")))
    return Ignore(f"dispute closed as {dispute.get('status')!r}: the frozen tokens stay frozen")


def _subscription(kind: str, subscription: dict[str, Any], created: datetime) -> Action:
    metadata = _metadata(subscription)
    account, ref = _text(metadata.get("account_id")), _text(subscription.get("id"))
    if not account:
        return Ignore("subscription has no metadata.account_id")
    ended = kind == "customer.subscription.deleted" or subscription.get("status") in ("canceled", "incomplete_expired")
    if ended:
        return Plan(account, FREE_PLAN, None, "", created, expire_allowance_now=True)
    plan = _text(metadata.get("plan_id"))
    period = _subscription_period(subscription)
    if not plan or period is None:
        return Reject("subscription needs metadata.plan_id and a current period", account)
    return Plan(account, plan, period, ref, created)


def _subscription_period(subscription: dict[str, Any]) -> tuple[datetime, datetime] | None:
    """Newer API versions put the period on the subscription's items, older ones on itself."""
    items = subscription.get("items", {}).get("data") or [{}]
    for source in (items[0], subscription):
        start, end = source.get("current_period_start"), source.get("current_period_end")
        if isinstance(start, int) and isinstance(end, int) and start < end:
            return _time(start), _time(end)
    return None


def _invoice(invoice: dict[str, Any]) -> Action:
    parent = invoice.get("parent") or {}
    details = (parent.get("subscription_details") or {}) if parent.get("type") == "subscription_details" else {}
    ref = _text(invoice.get("subscription")) or _text(details.get("subscription"))
    if not ref:
        return Ignore("invoice.paid without a subscription")
    account = _text(_metadata(details).get("account_id"))
    for line in (invoice.get("lines") or {}).get("data") or []:
        parent = line.get("parent") or {}
        if (
            line.get("subscription") == ref
            or (parent.get("subscription_item_details") or {}).get("subscription") == ref
        ):
            period = line.get("period") or {}
            start, end = period.get("start"), period.get("end")
            if isinstance(start, int) and isinstance(end, int) and start < end:
                return Grant(ref, _text(invoice.get("id")), (_time(start), _time(end)), account)
    return Reject("invoice.paid has no subscription line with a period", account)
