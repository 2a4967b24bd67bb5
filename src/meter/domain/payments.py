"""Payments that tokens were bought with, as refunds and disputes find them.

A pack purchase put its tokens in the purchased pool, which never expires. A subscription invoice
bought its period's allowance: while that period is current a reversal takes allowance back; once
it has ended, the allowance the period left unused (expired at the boundary) is what a reversal
can still claim without making debt, and the rest of what it takes back was spent, so it is debt.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from meter.domain.pools import PoolName
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
    # An invoice's: the start of the period whose allowance it bought.
    period_start: datetime | None = None
    # Of the frozen tokens, those that were debt when frozen (none left a pool for them).
    frozen_debt: int = 0
    # Of its period's unused allowance, what this payment's reversals counted as taken back.
    cover_claimed: int = 0

    @property
    def pool(self) -> PoolName:
        return PoolName.PURCHASED if self.key.kind is PaymentKind.PACK else PoolName.ALLOWANCE

    def bought_current_period(self, period_start: datetime) -> bool:
        """A pack's tokens never expire; an invoice's allowance is there while its period is."""
        return self.key.kind is PaymentKind.PACK or self.period_start == period_start


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
