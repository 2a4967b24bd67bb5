"""Which meter action a verified Stripe event asks for. Pure: no I/O, so every rule is testable
on the fixtures alone.

| event | action |
|---|---|
| checkout.session.completed, metadata.type=token_pack_purchase, payment_status=paid | Credit |
| checkout.session.completed, not yet paid | Ignore (async_payment_succeeded will credit) |
| checkout.session.async_payment_succeeded | Credit (same payment_ref: credited once) |
| charge.refunded | Reverse refund (of a pack or an invoice), by cumulative amount_refunded |
| charge.dispute.created / updated / closed | Reverse dispute / dispute_won / dispute_lost, by status |
| customer.subscription.created / updated | Plan (the plan its price is sold as, its period, its status) |
| customer.subscription.deleted | Plan: back to the default plan (allowance left ends as the catalog says) |
| invoice.paid of a subscription | InvoicePaid (its lines: a new period's allowance, or prorations) |
| invoice.payment_failed of a subscription | PaymentFailed (told; the month waits for its payment) |
| invoice_payment.paid | PaymentLink (the PaymentIntent a refund of the invoice will name) |
| anything else | Ignore |
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from meter.domain.checkout import TOKEN_PACK_PURCHASE
from meter.webhooks import reading
from meter.webhooks.actions import Action, Credit, Ignore, Plan, Reject, Reverse
from meter.webhooks.invoice_events import invoice_paid, invoice_payment_failed, invoice_payment_paid
from meter.webhooks.reading import Malformed

# A dispute's Stripe status, as meter keeps it: open freezes, won gives back, lost keeps taken.
DISPUTE_KINDS = {
    "warning_needs_response": "dispute",
    "warning_under_review": "dispute",
    "needs_response": "dispute",
    "under_review": "dispute",
    "warning_closed": "dispute_won",  # an inquiry that never became a chargeback
    "prevented": "dispute_won",  # settled by a refund instead (charge.refunded takes the tokens)
    "won": "dispute_won",
    "lost": "dispute_lost",
}
DISPUTE_EVENTS = ("charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed")
SUBSCRIPTION_EVENTS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)


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
    if kind in DISPUTE_EVENTS:
        return _dispute(obj)
    if kind in SUBSCRIPTION_EVENTS:
        return _subscription(kind, obj, reading.timestamp(event, "created"))
    if kind == "invoice.paid":
        return invoice_paid(obj)
    if kind == "invoice.payment_failed":
        return invoice_payment_failed(obj)
    if kind == "invoice_payment.paid":
        return invoice_payment_paid(obj)
    return Ignore(f"{kind} is not handled"[:200])


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
    """A refund of a pack or of a subscription invoice: the service finds which."""
    intent = reading.ref(charge, "payment_intent")
    if not intent:
        return Ignore("charge has no payment_intent: not paid through Checkout or an invoice")
    refunded = reading.whole(charge, "amount_refunded")
    if refunded == 0:
        return Ignore("charge.refunded with nothing refunded")
    return Reverse("refund", intent, refunded, reading.text(charge, "id"), reading.ref(charge, "invoice"))


def _dispute(dispute: dict[str, Any]) -> Action:
    """Every dispute event carries the dispute's status: the state it implies is what counts,
    whatever order the events come in."""
    intent = reading.ref(dispute, "payment_intent")
    if not intent:
        return Ignore("dispute has no payment_intent: not paid through Checkout or an invoice")
    status = reading.text(dispute, "status")
    if status not in DISPUTE_KINDS:
        raise Malformed(f"dispute status {status[:50]!r} is not one Stripe documents")
    return Reverse(DISPUTE_KINDS[status], intent, 0, reading.text(dispute, "id"))


def _subscription(kind: str, subscription: dict[str, Any], created: datetime) -> Action:
    metadata = reading.mapping(subscription, "metadata")
    account, ref = reading.text(metadata, "account_id"), reading.text(subscription, "id")
    if not account:
        return Ignore("subscription has no metadata.account_id")
    ended = kind == "customer.subscription.deleted" or subscription.get("status") in ("canceled", "incomplete_expired")
    if ended:
        return Plan(account, "", None, "", created, subscription_cancelled=True)
    items = reading.listed(subscription, "items")
    if not items:
        raise Malformed("subscription has no items")
    period = _subscription_period(subscription, items)
    if period is None:
        return Reject("subscription has no current period", account)
    prices = tuple(price for item in items if (price := reading.ref(item, "price")))
    status = reading.text(subscription, "status")[:64]
    return Plan(
        account,
        reading.text(metadata, "plan_id"),
        period,
        ref,
        created,
        stripe_prices=prices,
        subscription_status=status,
    )


def _subscription_period(subscription: dict[str, Any], items: list[dict[str, Any]]) -> tuple[datetime, datetime] | None:
    """Newer API versions put the period on the subscription's items, older ones on itself."""
    for source in (items[0], subscription):
        found = reading.period(source, "current_period_start", "current_period_end")
        if found is not None:
            return found
    return None
