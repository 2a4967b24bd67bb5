"""Billing periods: calendar months (UTC) without a subscription, else the subscription's period.

A period that has ended is replaced by the one containing `now`, in one step however many
boundaries were crossed, so an idle account gets one expiry and one grant, not one per month.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime


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


def following_period(current: Period, now: datetime, *, calendar_months: bool) -> Period:
    """The period containing `now` after `current` ended.

    Subscription periods step forward in whole months anchored at the current start (Stripe's
    monthly billing anchor) until one contains `now`; a new subscription event replaces them.
    """
    if calendar_months:
        return calendar_month(now)
    months = 1
    while add_months(current.start, months + 1) <= now:
        months += 1
    return Period(add_months(current.start, months), add_months(current.start, months + 1))
