"""Accounts: plan, period, debt and how many buckets their pools are split across."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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
