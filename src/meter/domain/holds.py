"""Holds (two-phase transfers): open -> committed (possibly partially, possibly with overage) or
released or expired, exactly once.

A hold records what it took from each pool and from which bucket, so that settling it gives
back the right amounts to the right places; its pricing is pinned at Reserve so a catalog change
never alters it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from meter.domain import amounts
from meter.domain.errors import (
    RequestIdReused,
    ReservationCommitted,
    ReservationExpired,
    ReservationReleased,
)


class HoldStatus(enum.StrEnum):
    OPEN = "open"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Pricing:
    """A model's prices and weights from one catalog version (weights in millionths, prices in
    micro-USD per million tokens)."""

    catalog_version: str
    input_weight: int
    output_weight: int
    input_price: int
    output_price: int

    def tokens(self, input_tokens: int, output_tokens: int) -> int:
        return amounts.weighted_tokens(input_tokens, output_tokens, self.input_weight, self.output_weight)

    def cost_micros(self, input_tokens: int, output_tokens: int) -> int:
        return amounts.cost_micros(input_tokens, output_tokens, self.input_price, self.output_price)


@dataclass(frozen=True)
class ReserveParams:
    """What a Reserve asked for; a replay of its request_id must ask for the same."""

    model: str
    input_tokens: int
    max_output_tokens: int
    ttl_seconds: int
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Usage:
    """The outcome of a committed hold."""

    input_tokens: int
    output_tokens: int
    charged_tokens: int
    cost_micros: int
    unbilled_tokens: int
    late: bool


@dataclass(frozen=True)
class Hold:
    account_id: str
    reservation_id: str
    request_id: str
    params: ReserveParams
    pricing: Pricing
    allowance_held: int
    allowance_bucket: int
    purchased_held: int
    purchased_bucket: int
    period_start: datetime
    status: HoldStatus
    expires_at: datetime
    usage: Usage | None = None

    @property
    def held_tokens(self) -> int:
        return self.allowance_held + self.purchased_held

    def check_replay(self, params: ReserveParams) -> None:
        """A reused request_id must carry the same parameters, or it is not a retry."""
        for name in ("model", "input_tokens", "max_output_tokens", "ttl_seconds", "labels"):
            if getattr(self.params, name) != getattr(params, name):
                raise RequestIdReused(self.request_id, name)

    def check_commit_replay(self, input_tokens: int, output_tokens: int) -> None:
        assert self.usage is not None
        if self.usage.input_tokens != input_tokens:
            raise RequestIdReused(self.reservation_id, "input_tokens")
        if self.usage.output_tokens != output_tokens:
            raise RequestIdReused(self.reservation_id, "output_tokens")

    def check_releasable(self) -> None:
        if self.status is HoldStatus.COMMITTED:
            raise ReservationCommitted(self.reservation_id)

    def check_extendable(self, now: datetime) -> None:
        if self.status is HoldStatus.COMMITTED:
            raise ReservationCommitted(self.reservation_id)
        if self.status is HoldStatus.RELEASED:
            raise ReservationReleased(self.reservation_id)
        if self.status is HoldStatus.EXPIRED or now >= self.expires_at:
            raise ReservationExpired(self.reservation_id)


@dataclass(frozen=True)
class Settlement:
    """How a hold ends: what of it is used, given back, or expired, and what the charge needs
    beyond it."""

    used_allowance: int
    used_purchased: int
    returned_allowance: int
    returned_purchased: int
    expired_allowance: int
    overage: int


def settle(hold: Hold, charge: int, *, allowance_expired: bool) -> Settlement:
    """Charge `charge` tokens against a hold (0 for a release), allowance part first.

    When the hold's allowance came from a period that has since ended, its unused part expires
    instead of returning: it is not given to the new period.
    """
    assert charge >= 0
    used_allowance = min(charge, hold.allowance_held)
    used_purchased = min(charge - used_allowance, hold.purchased_held)
    unused_allowance = hold.allowance_held - used_allowance
    return Settlement(
        used_allowance=used_allowance,
        used_purchased=used_purchased,
        returned_allowance=0 if allowance_expired else unused_allowance,
        returned_purchased=hold.purchased_held - used_purchased,
        expired_allowance=unused_allowance if allowance_expired else 0,
        overage=charge - used_allowance - used_purchased,
    )


@dataclass(frozen=True)
class NotPlaced:
    """The one-statement Reserve did not place the hold; `limits_checked`: it had checked the
    account's rate limits and found the Reserve within them, so the general path need not."""

    limits_checked: bool = False
