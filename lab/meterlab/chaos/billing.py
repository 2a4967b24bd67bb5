"""The Stripe flows beyond a purchase and its refund: disputes whose events arrive in either
order, subscriptions upgraded mid-period with their invoices (a period's, then a proration's),
and yearly subscriptions whose invoice pays for twelve allowance months; the PaymentIntents that
paid them and refunds, delivered in a shuffled order with duplicates, so that refunds arrive
before their invoices and invoices before their subscription.

Subscriber accounts serve no model calls: what is checked of them is that each allowance month
was granted once whatever the order (the proration never refilling it), a yearly one's only
within its paid year and less what refunds withheld from it, and that each refund took back its
share of what its payment bought.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meter import catalog as catalog_file
from meter.domain.periods import add_months

if TYPE_CHECKING:
    from meterlab.chaos.workload import Workload

# What the chaos servers sell: their METER_CATALOG.
CATALOG_PATH = Path(__file__).with_name("catalog.toml")
SERVER_ENV = {"METER_CATALOG": str(CATALOG_PATH)}
_CATALOG = catalog_file.load(CATALOG_PATH)
# The packs clients buy, alike but for the expiry of the second (a day after its sale): every check
# of what a purchase, refund or dispute moves holds for both until that expiry.
PACK = _CATALOG.pack("pack_1000_tokens")
EXPIRING_PACK = _CATALOG.pack("pack_1000_tokens_1d")
assert (PACK.tokens, PACK.price_minor, PACK.currency) == (
    EXPIRING_PACK.tokens,
    EXPIRING_PACK.price_minor,
    EXPIRING_PACK.currency,
)
_PLANS = _CATALOG.plans
PRO, BUSINESS = _PLANS["pro"], _PLANS["business"]
PRO_PRICE, BUSINESS_PRICE = PRO.stripe_prices[0], BUSINESS.stripe_prices[0]
# What each invoice of a subscriber bought: the period at pro, the upgrade to business.
PERIOD_AMOUNT, PRORATION_AMOUNT = 1000, 900
PERIOD_TOKENS = PRO.monthly_allowance_tokens
PRORATION_TOKENS = BUSINESS.monthly_allowance_tokens - PRO.monthly_allowance_tokens
DAY = 86_400
# Pro on the yearly price: one invoice for twelve allowance months.
YEARLY_PRICE = "price_pro_yearly"
YEAR_MONTHS, YEAR_AMOUNT = 12, 12_000
assert YEARLY_PRICE in PRO.stripe_prices
# What refunds of a year give back, cumulative as Stripe sends them: a month, half the year, ten
# and a half months (the second month half withheld), all of it (the current month's too).
YEAR_REFUNDS = (YEAR_AMOUNT // 12, YEAR_AMOUNT // 2, YEAR_AMOUNT * 21 // 24, YEAR_AMOUNT)


@dataclass
class Subscriber:
    account: str
    sub: str


async def dispute(workload: Workload) -> None:
    """A pack's dispute, its `created` and `closed` events in either order (Stripe redelivers the
    first after the second), sometimes one of them twice."""
    bought = workload.undisputed_purchase()
    if bought is None:
        return await workload.purchase()
    bought.disputed = True
    dispute_id = f"dp_chaos_{uuid.uuid4().hex[:16]}"
    outcome = workload.rng.choice(("won", "lost"))
    steps = [("charge.dispute.created", "needs_response"), ("charge.dispute.closed", outcome)]
    if workload.rng.random() < 0.5:
        steps.reverse()
    if workload.rng.random() < 0.3:
        steps.append(workload.rng.choice(steps))
    for kind, status in steps:
        obj = {
            "id": dispute_id,
            "object": "dispute",
            "payment_intent": bought.intent,
            "charge": bought.charge,
            "amount": PACK.price_minor,
            "status": status,
        }
        payload = stripe_event(kind, obj)
        await workload.deliver("dispute", bought.account, bought.session, payload, status=status, dispute=dispute_id)


async def subscribe(workload: Workload) -> None:
    """One subscriber's month: on pro, paid, upgraded to business with the proration invoiced at
    once, both payments partly or wholly refunded; every event shuffled, some twice."""
    now = int(time.time() + workload.clock_offset_seconds)
    subscriber = Subscriber(f"sub-{uuid.uuid4().hex[:10]}", f"sub_chaos_{uuid.uuid4().hex[:14]}")
    workload.subscribers.append(subscriber.account)
    start, end = now - DAY, now + 120 * DAY  # long enough that no clock jump of the run ends it
    period_invoice, proration_invoice = f"in_chaos_{uuid.uuid4().hex[:14]}", f"in_chaos_{uuid.uuid4().hex[:14]}"
    upgraded = now - 20
    events: list[tuple[str, bytes, dict[str, Any]]] = [
        ("subscription", _subscription(subscriber, "created", PRO_PRICE, now - 30, start, end), {}),
        ("subscription", _subscription(subscriber, "updated", BUSINESS_PRICE, upgraded, start, end), {}),
        ("invoice", _invoice(subscriber, period_invoice, [_line(start, end, PRO_PRICE, 1000)], PERIOD_AMOUNT), {}),
        (
            "invoice",
            _invoice(
                subscriber,
                proration_invoice,
                [_line(upgraded, end, PRO_PRICE, -100, True), _line(upgraded, end, BUSINESS_PRICE, 1000, True)],
                PRORATION_AMOUNT,
            ),
            {},
        ),
    ]
    for invoice, amount in ((period_invoice, PERIOD_AMOUNT), (proration_invoice, PRORATION_AMOUNT)):
        intent, charge = f"pi_chaos_{uuid.uuid4().hex[:16]}", f"ch_chaos_{uuid.uuid4().hex[:16]}"
        events.append(("invoice_payment", _payment(invoice, intent, amount), {}))
        for refunded in sorted({workload.rng.choice((amount // 2, amount)), amount // 2}):
            refund = _refund(intent, charge, amount, refunded)
            events.append(("sub_refund", refund, {"amount": refunded, "charge": charge, "invoice": invoice}))
    await _shuffled(workload, subscriber, events)


async def subscribe_yearly(workload: Workload) -> None:
    """A Pro subscriber on the yearly price, paid for its year (exactly twelve months from its
    start), sometimes refunded in part or whole. Its year began a month before a moment between
    the servers' now and the next calendar month, so that its second month begins before the clock
    jump's target (the next calendar month's start) and that jump crosses it."""
    now = workload.clock_offset_seconds + time.time()
    moment = datetime.fromtimestamp(now, UTC)
    following = add_months(moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0), 1)
    second = moment + (following - moment) * workload.rng.uniform(0.1, 0.9)
    began = add_months(second, -1).replace(microsecond=0)
    if add_months(began, 1).timestamp() <= now:  # the month's last days: its second month has begun
        began = datetime.fromtimestamp(int(now) - DAY, UTC)
    start, end = int(began.timestamp()), int(add_months(began, YEAR_MONTHS).timestamp())
    subscriber = Subscriber(f"year-{uuid.uuid4().hex[:10]}", f"sub_chaos_{uuid.uuid4().hex[:14]}")
    workload.subscribers.append(subscriber.account)
    invoice = f"in_chaos_{uuid.uuid4().hex[:14]}"
    intent, charge = f"pi_chaos_{uuid.uuid4().hex[:16]}", f"ch_chaos_{uuid.uuid4().hex[:16]}"
    year = {"price": YEARLY_PRICE, "start": start, "end": end}
    events: list[tuple[str, bytes, dict[str, Any]]] = [
        ("subscription", _subscription(subscriber, "created", YEARLY_PRICE, int(now) - 30, start, end), year),
        ("invoice", _invoice(subscriber, invoice, [_line(start, end, YEARLY_PRICE, YEAR_AMOUNT)], YEAR_AMOUNT), {}),
        ("invoice_payment", _payment(invoice, intent, YEAR_AMOUNT), {}),
    ]
    if workload.rng.random() < 0.6:
        for refunded in sorted(set(workload.rng.sample(YEAR_REFUNDS, workload.rng.choice((1, 2))))):
            refund = _refund(intent, charge, YEAR_AMOUNT, refunded)
            events.append(("sub_refund", refund, {"amount": refunded, "charge": charge, "invoice": invoice}))
    await _shuffled(workload, subscriber, events)


async def _shuffled(
    workload: Workload, subscriber: Subscriber, events: list[tuple[str, bytes, dict[str, Any]]]
) -> None:
    """Deliver a subscriber's events in a random order, sometimes one of them twice."""
    workload.rng.shuffle(events)
    if workload.rng.random() < 0.3:
        events.append(workload.rng.choice(events))
    for kind, payload, args in events:
        await workload.deliver(kind, subscriber.account, subscriber.sub, payload, **args)


def _subscription(who: Subscriber, kind: str, price: str, created: int, start: int, end: int) -> bytes:
    item = {"id": f"si_{who.sub}", "price": {"id": price}, "current_period_start": start, "current_period_end": end}
    obj = {
        "id": who.sub,
        "object": "subscription",
        "status": "active",
        "metadata": {"account_id": who.account},
        "items": {"object": "list", "data": [item]},
    }
    return stripe_event(f"customer.subscription.{kind}", obj, created=created)


def _line(start: int, end: int, price: str, amount: int, proration: bool = False) -> dict[str, Any]:
    kind = "invoice_item_details" if proration else "subscription_item_details"
    return {
        "object": "line_item",
        "amount": amount,
        "period": {"start": start, "end": end},
        "pricing": {"type": "price_details", "price_details": {"price": price}},
        "parent": {"type": kind, kind: {"proration": proration}},
    }


def _invoice(who: Subscriber, invoice: str, lines: list[dict[str, Any]], amount: int) -> bytes:
    details = {"subscription": who.sub, "metadata": {"account_id": who.account}}
    obj = {
        "id": invoice,
        "object": "invoice",
        "status": "paid",
        "amount_paid": amount,
        "currency": "usd",
        "parent": {"type": "subscription_details", "subscription_details": details},
        "lines": {"object": "list", "data": lines},
    }
    return stripe_event("invoice.paid", obj)


def _payment(invoice: str, intent: str, amount: int) -> bytes:
    obj = {
        "id": f"inpay_{uuid.uuid4().hex[:14]}",
        "object": "invoice_payment",
        "invoice": invoice,
        "status": "paid",
        "amount_paid": amount,
        "payment": {"type": "payment_intent", "payment_intent": intent},
    }
    return stripe_event("invoice_payment.paid", obj)


def _refund(intent: str, charge: str, amount: int, refunded: int) -> bytes:
    obj = {
        "id": charge,
        "object": "charge",
        "payment_intent": intent,
        "amount": amount,
        "amount_refunded": refunded,
        "refunded": refunded == amount,
    }
    return stripe_event("charge.refunded", obj)


def stripe_event(kind: str, obj: dict[str, Any], created: int | None = None) -> bytes:
    """A Stripe event envelope around `obj`, as the adapter receives it."""
    return json.dumps(
        {
            "id": f"evt_chaos_{uuid.uuid4().hex[:16]}",
            "object": "event",
            "type": kind,
            "created": created or int(time.time()),
            "livemode": False,
            "data": {"object": obj},
        }
    ).encode()
