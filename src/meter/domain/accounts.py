"""Accounts: plan, period, debt and how many buckets their pools are split across."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from meter.domain.holds import ExpiredHolds
from meter.domain.limits import RateLimits
from meter.domain.periods import Period


@dataclass(frozen=True)
class Account:
    account_id: str
    plan_id: str
    monthly_allowance: int  # granted at each new period
    period: Period
    calendar_periods: bool  # True without a subscription: periods are calendar months (UTC)
    allowance_total: int  # granted for the current period
    debt: int
    bucket_count: int
    subscription_ref: str | None
    plan_event_time: datetime | None
    # The period whose allowance has been granted; for a subscription it is granted when the
    # period's invoice is paid, so it can lag behind `period`.
    granted_period_start: datetime | None = None
    # The account's own rate limits (set through SetPlan); a limit left None is its plan's.
    limits: RateLimits = RateLimits()
    # What its expired holds do, if the account has its own setting (SetPlan); None: its plan's.
    expired_holds: ExpiredHolds | None = None

    @property
    def subscription_managed(self) -> bool:
        """Allowance follows paid invoices instead of the calendar."""
        return self.subscription_ref is not None

    @property
    def allowance_granted(self) -> bool:
        return self.granted_period_start == self.period.start
