"""Payments that tokens were bought with, as refunds and disputes find them.

A pack purchase put its tokens in the purchased pool, which never expires. A subscription invoice
bought the allowance months that begin in its billing period (twelve for a yearly price). Where a
reversal takes them back from is meter_take_back's rule (storage/sql): months not yet begun first,
then the current month's allowance, then what ended months left unused (it expired), and what
none covers was spent: debt.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from meter.domain.reversals import PaymentState


class PaymentKind(enum.StrEnum):
    PACK = "pack"  # a Checkout session: ref is the session id
    INVOICE = "invoice"  # a subscription invoice: ref is the invoice id


@dataclass(frozen=True)
class PaymentKey:
    kind: PaymentKind
    account_id: str
    ref: str


@dataclass(frozen=True)
class Payment:
    key: PaymentKey
    state: PaymentState


@dataclass(frozen=True)
class TakenBack:
    """Where a reversal found the tokens it took back (meter_take_back)."""

    withheld: int  # from the allowance months an invoice paid for that have not begun
    from_pool: int  # from the pool the payment filled
    from_cover: int  # from what its ended months left unused (expired already)
    debt: int  # spent: now debt


@dataclass(frozen=True)
class SubscriptionPayment:
    """A paid subscription invoice as recorded: the period it paid for (the current one, for an
    invoice of prorations only) and the allowance tokens it bought."""

    account_id: str
    invoice_ref: str
    subscription_ref: str
    period_start: datetime
    period_end: datetime
    proration: bool
    amount_minor: int
    currency: str
    tokens: int
    payment_intent: str | None
    months: int = 0  # the allowance months it pays for (twelve for a year); 0: prorations
    month_anchor: datetime | None = None  # what its months are counted from (its account's, when paid)
    # What its ended months left unused, which a refund takes back from nothing (it expired); at
    # first, the share of the months that had ended before it was recorded (never granted).
    unused_at_end: int = 0
