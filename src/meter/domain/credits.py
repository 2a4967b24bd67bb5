"""Credits as recorded: a pack purchase (by its payment_ref) and an adjustment (by its
request_id), each applied once. A retry with the same key must carry the same facts. A payment
is decided once, whatever account its events name: credited to one account, or refused."""

from __future__ import annotations

from dataclasses import dataclass
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
