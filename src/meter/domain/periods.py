"""Billing periods: calendar months (UTC) without a subscription, else the subscription's period.

What follows a period that has ended is decided in SQL (meter_following_period, run by
meter_roll_over); this module holds what Python decides of periods: whether one a request gives
is plausible, and whether it moves an account.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# What a billing period may be. Stripe bills by the day at the least and by the year at the most;
# a first period cut short by a billing anchor can be shorter, but not under an hour.
MIN_PERIOD = timedelta(hours=1)
MAX_PERIOD = timedelta(days=366)
# Stripe's clock and the database's agree within this: a period starting later is in the future.
CLOCK_SKEW = timedelta(minutes=5)
# A period that ended longer ago than this is no one's current period (Stripe redelivers for three
# days); a subscription period in 1970 is a forged or broken event.
STALE_AFTER = timedelta(days=366)


@dataclass(frozen=True)
class Period:
    """[start, end) in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        assert self.start < self.end, "a period must end after it starts"

    def has_ended(self, now: datetime) -> bool:
        return now >= self.end


def add_months(anchor: datetime, months: int) -> datetime:
    """The same day-of-month and time `months` later, clamped to the month's last day."""
    index = anchor.month - 1 + months
    year, month = anchor.year + index // 12, index % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def calendar_month(now: datetime) -> Period:
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return Period(start, add_months(start, 1))


def moves_to(current: Period, paid: Period, now: datetime) -> bool:
    """Whether a period Stripe reports (a subscription's, an invoice's) becomes the account's: a
    different one that is not older, or one that contains now (Stripe's period is the truth over a
    period meter computed at a boundary). An older, ended one never takes an account back."""
    return paid != current and (paid.start >= current.start or paid.end > now)


def absurd(period: Period, now: datetime) -> str | None:
    """Why `period` cannot be an account's billing period, or None when it can."""
    if period.end - period.start < MIN_PERIOD:
        return "a billing period lasts at least an hour"
    if period.end - period.start > MAX_PERIOD:
        return "a billing period is at most 366 days"
    if period.start > now + CLOCK_SKEW:
        return "a billing period cannot start in the future"
    if period.end < now - STALE_AFTER:
        return "a billing period that ended over a year ago is no one's current period"
    return None
