"""Credits as recorded: a pack purchase (by its payment_ref) and an adjustment (by its
request_id), each applied once. A retry with the same key must carry the same facts. A payment
is decided once, whatever account its events name: credited to one account, or refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from meter.domain.pools import PoolName


@dataclass(frozen=True)
class Purchase:
    account_id: str
    payment_ref: str
    pack_id: str
    tokens: int
    amount_minor: int
    currency: str
    payment_intent: str | None = None
    event_id: str | None = None
    expires_after_days: int | None = None  # as sold: its tokens a grant of their own expiring then

    def differing_field(self, other: Purchase) -> str | None:
        """The first fact in which a retry differs from the recorded purchase (ids aside)."""
        return _differing(self, other, ("pack_id", "tokens", "amount_minor", "currency"))


@dataclass(frozen=True)
class RefusedPurchase:
    """A payment Stripe took that meter would not credit, and why: support refunds it."""

    purchase: Purchase
    reason: str  # the ErrorInfo reason of the refusal (UNKNOWN_PACK, PURCHASE_MISMATCH, ...)
    message: str
    refused_at: datetime | None = None  # as recorded
    number: int = 0  # its place in the order refusals were recorded (a listing's page cursor)
    settlement: Settlement = field(default_factory=lambda: Settlement())


class RefusalState(StrEnum):
    OPEN = "open"  # nobody settled it yet
    REFUND_REQUESTED = "refund_requested"  # meter asked Stripe to refund it; the refund's event closes it
    REFUNDED = "refunded"  # refunded whole (through meter, or in Stripe's dashboard)
    RESOLVED = "resolved"  # settled otherwise, as support's note says


@dataclass(frozen=True)
class Settlement:
    """What support (or Stripe) did about a refused purchase. Once anything is done, the payment
    is never credited by a later event: its money is given back, or support has dealt with it."""

    state: RefusalState = RefusalState.OPEN
    refunded_minor: int = 0  # Stripe's cumulative amount_refunded, as its refunds' events said
    refund_ref: str | None = None  # the refund meter asked for, or the last one an event named
    note: str | None = None
    settled_at: datetime | None = None
    settled_by: str | None = None  # the caller that settled it (none: a refund's event)

    @property
    def creditable(self) -> bool:
        return self.state is RefusalState.OPEN and self.refunded_minor == 0


class PaymentOutcome(StrEnum):
    CREDITED = "credited"  # for good: a later event naming another account or other terms changes nothing
    REFUSED = "refused"  # for now: support refunds it, unless a later event with the terms as sold credits it


@dataclass(frozen=True)
class PaymentDecision:
    """What became of one pack payment (a Checkout Session), and on which account."""

    payment_ref: str
    account_id: str
    outcome: PaymentOutcome


@dataclass(frozen=True)
class Adjustment:
    account_id: str
    request_id: str
    pool: PoolName
    delta: int
    reason: str

    def differing_field(self, other: Adjustment) -> str | None:
        return _differing(self, other, ("pool", "delta", "reason"))


def _differing(recorded: object, retry: object, names: tuple[str, ...]) -> str | None:
    return next((name for name in names if getattr(recorded, name) != getattr(retry, name)), None)
