"""What the adapter asks of meter for a verified Stripe event: one action, one RPC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from meter.domain.invoices import InvoiceLine


@dataclass(frozen=True)
class Credit:
    """CreditPurchase: a paid token pack."""

    account_id: str
    pack_id: str
    tokens: int
    amount_minor: int
    currency: str
    payment_ref: str
    payment_intent: str


@dataclass(frozen=True)
class Reverse:
    """ReverseCredit: a refund or a dispute's status."""

    kind: str  # "refund" | "dispute" | "dispute_won" | "dispute_lost"
    payment_intent: str
    amount_minor: int
    reversal_ref: str
    invoice_ref: str = ""  # when the charge names its invoice (API versions before 2025-03-31)


@dataclass(frozen=True)
class Plan:
    """SetPlan: a subscription's plan and billing period."""

    account_id: str
    plan_id: str  # as the metadata names it ("" when it does not): the service checks it
    period: tuple[datetime, datetime] | None
    subscription_ref: str
    event_time: datetime
    subscription_cancelled: bool = False  # back to the default plan; plan_id is then ""
    stripe_prices: tuple[str, ...] = ()  # what the subscription is sold at: its plan
    subscription_status: str = ""  # Stripe's: active, past_due, unpaid, ...


@dataclass(frozen=True)
class InvoicePaid:
    """GrantPeriodAllowance: a paid subscription invoice, as its lines say."""

    subscription_ref: str
    invoice_ref: str
    account_id: str
    amount_minor: int
    currency: str
    lines: tuple[InvoiceLine, ...]
    payment_intent: str = ""


@dataclass(frozen=True)
class PaymentLink:
    """LinkInvoicePayment: the PaymentIntent that paid an invoice."""

    invoice_ref: str
    payment_intent: str


@dataclass(frozen=True)
class PaymentFailed:
    """RecordPaymentFailure: a subscription invoice whose payment failed."""

    subscription_ref: str
    invoice_ref: str
    account_id: str
    amount_minor: int
    currency: str
    attempt_count: int
    next_attempt: datetime | None  # None: Stripe will not try again
    billing_reason: str


@dataclass(frozen=True)
class Ignore:
    reason: str
    account_id: str = ""


@dataclass(frozen=True)
class Reject:
    """Authentic, but unusable as sent (e.g. malformed metadata): stored as rejected."""

    reason: str
    account_id: str = ""


Action = Credit | Reverse | Plan | InvoicePaid | PaymentLink | PaymentFailed | Ignore | Reject
