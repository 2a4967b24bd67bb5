"""GrantPeriodAllowance and LinkInvoicePayment: what a paid subscription invoice does.

An invoice that pays for a new billing period pays for the allowance months that begin in it
(twelve for a year, one for a month), once however many events say so: the current month's is
granted now if it was not, each later one at its month's start (meter_begin_month). The period is
its first line that is not a proration (`domain.invoices`), and a paid period that is current or
later than the account's replaces it (`periods.moves_to`). An invoice of prorations only (an
upgrade invoiced at once) grants nothing: SetPlan granted the upgrade already, and a proration
never refills a month.

Every invoice recorded remembers what its payment bought (its months' allowance, and the anchor
they are counted from; or for prorations the allowance the upgrade added), so that a refund or
dispute of it can take that back (`reversals`). Since Stripe API 2025-03-31 a refunded charge no
longer names its invoice; the invoice's PaymentIntent comes from an invoice_payment.paid
(LinkInvoicePayment), or from the invoice itself in older API versions.

An invoice of a subscription no account is linked to yet, or the payment of an invoice not
recorded yet, waits (`waiting`) when it comes from the webhook adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from meter.domain import ids
from meter.domain.accounts import Account
from meter.domain.amounts import require_tokens
from meter.domain.balance import Balance
from meter.domain.errors import InvalidField, PaymentNotFound, RequestIdReused, SubscriptionNotFound
from meter.domain.events import EventStatus, WebhookEvent
from meter.domain.invoices import InvoiceLine, billing_line, period_tokens, proration_tokens
from meter.domain.payments import SubscriptionPayment
from meter.domain.periods import Period, absurd, moves_to
from meter.service import events, waiting
from meter.service.accounts import locked_current_account
from meter.service.context import Meter
from meter.service.periods import anchor_for, begin_month
from meter.service.ports import Store

MAX_LINES = 100
MAX_REF_LENGTH = 255


@dataclass(frozen=True)
class PaidInvoice:
    subscription_ref: str
    invoice_ref: str
    account_id: str = ""  # when the invoice names it (the subscription's metadata)
    amount_minor: int = 0
    currency: str = ""
    lines: tuple[InvoiceLine, ...] = ()
    payment_intent: str = ""  # when the invoice names it

    def as_json(self) -> dict[str, Any]:
        lines = [
            {
                "period": [line.period.start.isoformat(), line.period.end.isoformat()] if line.period else None,
                "proration": line.proration,
                "stripe_price": line.stripe_price,
                "amount_minor": line.amount_minor,
            }
            for line in self.lines
        ]
        return {**self.__dict__, "lines": lines}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PaidInvoice:
        lines = tuple(
            InvoiceLine(
                Period(*map(datetime.fromisoformat, line["period"])) if line["period"] else None,
                line["proration"],
                line["stripe_price"],
                line["amount_minor"],
            )
            for line in data["lines"]
        )
        return cls(**(data | {"lines": lines}))


@dataclass(frozen=True)
class PeriodGrant:
    balance: Balance | None  # None while the invoice waits for its subscription
    granted: bool
    event_status: EventStatus | None = None


async def grant_period_allowance(
    meter: Meter, paid: PaidInvoice, source_event: WebhookEvent | None = None
) -> PeriodGrant:
    async def run() -> PeriodGrant:
        _check(paid)
        events.check_event(source_event)
        waits = None
        if source_event is not None:
            key, reason = (
                waiting.subscription_key(paid.subscription_ref),
                f"waiting for the subscription {paid.subscription_ref}",
            )
            waits = waiting.Waiting(key, "invoice", paid.as_json(), source_event, reason)
        return await waiting.now_or_when_it_arrives(
            meter,
            lambda store: subscriber(store, paid.subscription_ref, paid.account_id),
            lambda account_id: _record_now(meter, account_id, paid, source_event),
            waits,
            PeriodGrant(None, False, EventStatus.PENDING),
            SubscriptionNotFound(paid.subscription_ref),
        )

    return await events.rejecting(meter, events.event_account(paid.account_id), source_event, run)


def _check(paid: PaidInvoice) -> None:
    ids.idempotency_key(paid.subscription_ref, "subscription_ref")
    ids.idempotency_key(paid.invoice_ref, "invoice_ref")
    if paid.account_id:
        ids.account_id(paid.account_id)
    require_tokens("amount_minor", paid.amount_minor, minimum=0, maximum=2**62)
    if len(paid.currency) > 16 or len(paid.payment_intent) > MAX_REF_LENGTH:
        raise InvalidField("currency" if len(paid.currency) > 16 else "payment_intent", "too long")
    if len(paid.lines) > MAX_LINES:
        raise InvalidField("lines", f"at most {MAX_LINES}")
    if not any(line.period is not None for line in paid.lines):
        raise InvalidField("period_start", "the invoice has no line with a period")


async def subscriber(store: Store, subscription_ref: str, account_id: str) -> str | None:
    """The account the subscription is linked to (the one an invoice names, if it names one)."""
    if not account_id:
        return await store.account_by_subscription(subscription_ref)
    account, _ = await store.account_state(account_id)
    return account_id if account and account.subscription_ref == subscription_ref else None


async def _record_now(
    meter: Meter, account_id: str, paid: PaidInvoice, source_event: WebhookEvent | None
) -> PeriodGrant:
    async def work(store: Store) -> PeriodGrant:
        account, now = await store.account_state(account_id)
        if account is None:
            raise SubscriptionNotFound(paid.subscription_ref)
        claimed = await events.claim(store, account_id, source_event, now)
        granted = claimed and await record_invoice(meter, store, account, paid, now)
        return PeriodGrant(await store.balance(account_id), granted, events.status(source_event, claimed))

    return await meter.storage.transaction(work)


async def apply_waiting_invoice(
    meter: Meter, store: Store, account_id: str, request: dict[str, Any], now: datetime
) -> None:
    """A stored invoice, now that SetPlan linked its subscription (in that transaction)."""
    account, _ = await store.account_state(account_id)
    assert account is not None
    await record_invoice(meter, store, account, PaidInvoice.from_json(request), now)


async def record_invoice(meter: Meter, store: Store, account: Account, paid: PaidInvoice, now: datetime) -> bool:
    """Record the invoice, granting its period's allowance if it pays for a new one; True if it
    granted. Then whatever waited for this invoice (or its payment) is applied."""
    if account.subscription_ref != paid.subscription_ref or (paid.account_id and paid.account_id != account.account_id):
        raise SubscriptionNotFound(paid.subscription_ref)
    # An invoice is paid once, whatever account its events lead to (two accounts may name one
    # subscription after its metadata was edited): recorded on one, under the invoice's lock.
    await store.lock_key(waiting.invoice_key(paid.invoice_ref))
    if (paid_before := await store.payment_by_invoice(paid.invoice_ref)) is not None:
        if paid_before.account_id != account.account_id:
            raise RequestIdReused(paid.invoice_ref, "account_id")
        return False  # recorded before, under another event
    account = await locked_current_account(store, account, now)
    billing = account.billing or account.period
    billing_paid = account.paid_through is not None and account.paid_through >= billing.end
    line = billing_line(paid.lines, billing, billing_paid)
    period = line.period if line is not None else None
    if period is not None and (problem := absurd(period, now)):
        raise InvalidField("period_start", problem)
    granted, tokens, months, ended_unpaid = False, 0, 0, 0
    if line is not None and period is not None:
        if moves_to(billing, period, now) or (period == billing and not billing_paid):
            account, granted = await _paid_for(store, account, period, now)
            months = await store.months_beginning(account.month_anchor, period)
            per_month = period_tokens(line, account.monthly_allowance, meter.catalog.allowance_sold_at)
            tokens = months * per_month
            ended_unpaid = per_month * await _months_ended_before(store, account, period)
    else:
        tokens = proration_tokens(paid.lines, billing, meter.catalog.allowance_sold_at)
    paid_for = period if period is not None else billing
    recorded = SubscriptionPayment(
        account_id=account.account_id,
        invoice_ref=paid.invoice_ref,
        subscription_ref=paid.subscription_ref,
        period_start=paid_for.start,
        period_end=paid_for.end,
        proration=period is None,
        amount_minor=paid.amount_minor,
        currency=paid.currency.lower(),
        tokens=tokens,
        payment_intent=paid.payment_intent or None,
        months=months,
        month_anchor=account.month_anchor if months else None,
        unused_at_end=ended_unpaid,
    )
    await store.insert_subscription_payment(recorded, now)
    await waiting.release(meter, store, account.account_id, waiting.invoice_key(paid.invoice_ref), now)
    if paid.payment_intent:
        await waiting.release(meter, store, account.account_id, waiting.payment_intent_key(paid.payment_intent), now)
    return granted


async def _months_ended_before(store: Store, account: Account, period: Period) -> int:
    """The months of `period` that ended before the account's current month: paid late (the
    invoice delivered after them), they were never granted, so nothing of them was spent."""
    if period.start >= account.period.start:
        return 0
    return await store.months_beginning(account.month_anchor, Period(period.start, account.period.start))


async def _paid_for(store: Store, account: Account, period: Period, now: datetime) -> tuple[Account, bool]:
    """The account paid through `period`, its billing period now (months counted from its start
    unless it begins one of the months already counted); the current month is begun and granted
    when it had not been. True when this granted the current month."""
    anchor = await anchor_for(store, account, period)
    paid = replace(
        account, billing=period, month_anchor=anchor, paid_through=max(account.paid_through or period.end, period.end)
    )
    month = await store.allowance_month(anchor, now)
    if month == account.period and account.allowance_granted:
        await store.save_plan(paid, now)
        return paid, False
    begun = await begin_month(store, paid, now)
    return begun, begun.allowance_granted


@dataclass(frozen=True)
class Linked:
    balance: Balance | None  # None while the link waits for its invoice
    event_status: EventStatus | None = None


async def link_invoice_payment(
    meter: Meter, *, invoice_ref: str, payment_intent: str, source_event: WebhookEvent | None = None
) -> Linked:
    async def run() -> Linked:
        ids.idempotency_key(invoice_ref, "invoice_ref")
        ids.idempotency_key(payment_intent, "payment_intent")
        events.check_event(source_event)
        request = {"invoice_ref": invoice_ref, "payment_intent": payment_intent}
        waits = None
        if source_event is not None:
            key, reason = waiting.invoice_key(invoice_ref), f"waiting for the invoice {invoice_ref}"
            waits = waiting.Waiting(key, "payment_link", request, source_event, reason)
        return await waiting.now_or_when_it_arrives(
            meter,
            lambda store: store.payment_by_invoice(invoice_ref),
            lambda key: _link_now(meter, key.account_id, request, source_event),
            waits,
            Linked(None, EventStatus.PENDING),
            PaymentNotFound(invoiceRef=invoice_ref),
        )

    return await events.rejecting(meter, "", source_event, run)


async def _link_now(
    meter: Meter, account_id: str, request: dict[str, str], source_event: WebhookEvent | None
) -> Linked:
    async def work(store: Store) -> Linked:
        _, now = await store.account_state(account_id)
        claimed = await events.claim(store, account_id, source_event, now)
        if claimed:
            await apply_waiting_link(meter, store, account_id, request, now)
        return Linked(await store.balance(account_id), events.status(source_event, claimed))

    return await meter.storage.transaction(work)


async def apply_waiting_link(
    meter: Meter, store: Store, account_id: str, request: dict[str, Any], now: datetime
) -> None:
    """Tie the PaymentIntent to the invoice, then apply the reversals that waited for it."""
    account, _ = await store.account_state(account_id)
    assert account is not None
    await locked_current_account(store, account, now)
    linked = await store.link_payment_intent(account_id, request["invoice_ref"], request["payment_intent"])
    if linked is None:
        raise PaymentNotFound(invoiceRef=request["invoice_ref"])
    if linked != request["payment_intent"]:
        raise InvalidField("payment_intent", f"the invoice was paid by {linked}; one PaymentIntent per invoice")
    await waiting.release(meter, store, account_id, waiting.payment_intent_key(linked), now)
