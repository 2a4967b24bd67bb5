"""invoice.paid, invoice.payment_failed and invoice_payment.paid: what a subscription invoice
says, in both the API versions before 2025-03-31 (lines and charges name their subscription and
invoice) and after (`parent` objects, and the PaymentIntent only on the InvoicePayment)."""

from __future__ import annotations

from typing import Any

from meter.domain.invoices import InvoiceLine
from meter.domain.periods import Period
from meter.webhooks import reading
from meter.webhooks.actions import Action, Ignore, InvoicePaid, PaymentFailed, PaymentLink, Reject


def _subscription_of_invoice(invoice: dict[str, Any]) -> tuple[str, str, Ignore | None]:
    """The invoice's subscription and the account its metadata names, or why it is not meter's."""
    parent = reading.mapping(invoice, "parent")
    details = reading.mapping(parent, "subscription_details") if parent.get("type") == "subscription_details" else {}
    ref = reading.ref(invoice, "subscription") or reading.ref(details, "subscription")
    if not ref:
        return "", "", Ignore("invoice without a subscription")
    metadata = details.get("metadata")
    account = reading.text(metadata, "account_id") if isinstance(metadata, dict) else ""
    if isinstance(metadata, dict) and not account:
        return ref, "", Ignore("invoice of a subscription without metadata.account_id: not one meter sold")
    return ref, account, None


def invoice_paid(invoice: dict[str, Any]) -> Action:
    ref, account, ignored = _subscription_of_invoice(invoice)
    if ignored is not None:
        return ignored
    lines = tuple(_line(line) for line in reading.listed(invoice, "lines") if _subscription_of(line) in ("", ref))
    if not any(line.period is not None for line in lines):
        return Reject("invoice.paid has no subscription line with a period", account)
    return InvoicePaid(
        subscription_ref=ref,
        invoice_ref=reading.text(invoice, "id"),
        account_id=account,
        amount_minor=reading.whole(invoice, "amount_paid"),
        currency=reading.text(invoice, "currency"),
        lines=lines,
        payment_intent=reading.ref(invoice, "payment_intent") or _paid_by(invoice),
    )


def invoice_payment_failed(invoice: dict[str, Any]) -> Action:
    """A subscription invoice Stripe could not collect (this attempt): told to the product."""
    ref, account, ignored = _subscription_of_invoice(invoice)
    if ignored is not None:
        return ignored
    next_attempt = invoice.get("next_payment_attempt")
    return PaymentFailed(
        subscription_ref=ref,
        invoice_ref=reading.text(invoice, "id"),
        account_id=account,
        amount_minor=reading.whole(invoice, "amount_due"),
        currency=reading.text(invoice, "currency"),
        attempt_count=reading.whole(invoice, "attempt_count", maximum=1_000) if "attempt_count" in invoice else 0,
        next_attempt=None if next_attempt is None else reading.timestamp(invoice, "next_payment_attempt"),
        billing_reason=reading.text(invoice, "billing_reason")[:64],
    )


def invoice_payment_paid(payment: dict[str, Any]) -> Action:
    """An InvoicePayment: which PaymentIntent paid which invoice (how a refund finds its invoice)."""
    paid_by = reading.mapping(payment, "payment")
    if paid_by.get("type") != "payment_intent":
        return Ignore(f"invoice paid by {paid_by.get('type')!r}, not a PaymentIntent"[:200])
    if payment.get("status") not in (None, "paid"):
        return Ignore(f"invoice payment is {payment.get('status')!r}"[:200])
    invoice, intent = reading.ref(payment, "invoice"), reading.ref(paid_by, "payment_intent")
    if not invoice or not intent:
        return Reject("invoice_payment needs its invoice and payment.payment_intent")
    return PaymentLink(invoice, intent)


def _details(line: dict[str, Any]) -> dict[str, Any]:
    """The line's subscription item or invoice item details, as its parent's type says."""
    parent = reading.mapping(line, "parent")
    kind = parent.get("type")
    return reading.mapping(parent, kind) if kind in ("subscription_item_details", "invoice_item_details") else {}


def _subscription_of(line: dict[str, Any]) -> str:
    return reading.ref(line, "subscription") or reading.ref(_details(line), "subscription")


def _line(line: dict[str, Any]) -> InvoiceLine:
    period = reading.period(reading.mapping(line, "period"), "start", "end")
    pricing = reading.mapping(reading.mapping(line, "pricing"), "price_details")
    price = reading.ref(pricing, "price") or reading.ref(line, "price") or reading.ref(line, "plan")
    proration = line.get("proration") is True or _details(line).get("proration") is True
    return InvoiceLine(
        Period(*period) if period else None, proration, price, reading.signed(line, "amount") if "amount" in line else 0
    )


def _paid_by(invoice: dict[str, Any]) -> str:
    """The PaymentIntent of an invoice whose `payments` were expanded (API 2025-03-31 on)."""
    for payment in reading.listed(invoice, "payments"):
        paid_by = reading.mapping(payment, "payment")
        if paid_by.get("type") == "payment_intent" and payment.get("status") in (None, "paid"):
            return reading.ref(paid_by, "payment_intent")
    return ""
