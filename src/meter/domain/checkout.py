"""Checkout Sessions meter sells packs through: what each sold, and how many an account may open.

The old system let one user open a thousand sessions at once. Here each account may have a few
open (unpaid and unexpired) and open a few per hour; a session counts against both from the moment
meter starts creating it, so concurrent requests cannot slip past a limit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from meter.domain.errors import RateLimited

# A Checkout Session's metadata.type when it sells a pack: what the webhook adapter credits.
TOKEN_PACK_PURCHASE = "token_pack_purchase"
HOUR = timedelta(hours=1)
# A session takes payment for its lifetime and this much more: Stripe refuses an expiry under 30
# minutes by its own clock, which reads the request a moment after meter priced it.
EXPIRY_MARGIN = timedelta(minutes=1)
# A session not yet given back by Stripe still counts as open for this long at most: the time a
# create takes, with room for Stripe's retries (a replay finishes it).
CREATING = timedelta(minutes=5)


class CheckoutStatus(Enum):
    OPEN = "open"
    PAID = "paid"
    EXPIRED = "expired"


@dataclass(frozen=True)
class CheckoutLimits:
    open_sessions: int = 5
    sessions_per_hour: int = 20
    session_minutes: int = 30  # how long Stripe takes payment on a session (30 to 1440)

    @property
    def lifetime(self) -> timedelta:
        return timedelta(minutes=self.session_minutes) + EXPIRY_MARGIN


@dataclass(frozen=True)
class SoldPack:
    """What a session sells, as the catalog priced it when the session was created: the terms a
    paid session is credited on, whatever the catalog says by the time it is paid."""

    pack_id: str
    tokens: int
    price_minor: int
    currency: str
    catalog_version: str
    expires_after_days: int | None = None  # the pack's tokens expire that long after they are credited


@dataclass(frozen=True)
class CheckoutOrder:
    """A request to sell one pack to one account: what the session is created from."""

    account_id: str
    request_id: str
    sold: SoldPack
    name: str  # what the customer sees on Stripe's page
    success_url: str
    cancel_url: str

    def differing_field(self, session: CheckoutSession) -> str | None:
        """The first parameter a replay under the same request_id changed (None: the same)."""
        for name in ("success_url", "cancel_url"):
            if getattr(self, name) != getattr(session, name):
                return name
        return "pack_id" if self.sold.pack_id != session.sold.pack_id else None


@dataclass(frozen=True)
class CheckoutSession:
    """A session meter created (or began to: `session_id` is "" until Stripe answered)."""

    account_id: str
    request_id: str
    sold: SoldPack
    success_url: str
    cancel_url: str
    created_at: datetime
    expires_at: datetime
    session_id: str = ""
    url: str = ""
    paid_at: datetime | None = None

    def status(self, now: datetime) -> CheckoutStatus:
        if self.paid_at is not None:
            return CheckoutStatus.PAID
        return CheckoutStatus.OPEN if now < self.expires_at else CheckoutStatus.EXPIRED


@dataclass(frozen=True)
class CreatedSession:
    """What Stripe answered: the session's id and the page to send the customer to."""

    session_id: str
    url: str


@dataclass(frozen=True)
class RecentSessions:
    """An account's sessions that count against its limits now."""

    open_until: Sequence[datetime]  # when each open session stops being open
    created_at: Sequence[datetime]  # when each session of the last hour was created


def refusal(limits: CheckoutLimits, recent: RecentSessions, now: datetime) -> RateLimited | None:
    """Why one more session may not be opened now, with when it can be; None: it may."""
    if len(recent.open_until) >= limits.open_sessions:
        frees = sorted(recent.open_until)[len(recent.open_until) - limits.open_sessions]
        return RateLimited("openCheckoutSessions", limits.open_sessions, _seconds(frees - now))
    if len(recent.created_at) >= limits.sessions_per_hour:
        frees = sorted(recent.created_at)[len(recent.created_at) - limits.sessions_per_hour] + HOUR
        return RateLimited("checkoutSessionsPerHour", limits.sessions_per_hour, _seconds(frees - now))
    return None


def _seconds(delay: timedelta) -> float:
    return max(delay.total_seconds(), 0.001)
