"""Accounts: plan, allowance month, billing, debt and how many buckets their pools are split across.

Two periods, never to be confused: `period` is the allowance month (when what is left of the
allowance expires and the next month's is granted: what a user means by "my allowance renews
on"); `billing` is the subscription's billing period as Stripe last said, and `paid_through` the end
of the latest one an invoice paid for (a yearly invoice pays for the twelve months it spans).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from meter.domain.holds import ExpiredHolds
from meter.domain.limits import RateLimits
from meter.domain.periods import Period
from meter.domain.plans import Rollover


@dataclass(frozen=True)
class Account:
    account_id: str
    plan_id: str
    monthly_allowance: int  # granted at each allowance month the plan is paid for
    period: Period  # the allowance month
    allowance_total: int  # granted for the current month
    debt: int
    bucket_count: int
    subscription_ref: str | None
    plan_event_time: datetime | None
    # The month whose allowance has been granted; a subscriber's is granted once an invoice paid
    # for it, so it can lag behind `period`.
    granted_period_start: datetime | None = None
    # Months are counted from this instant (a billing anchor); None: calendar months (UTC).
    month_anchor: datetime | None = None
    billing: Period | None = None  # the subscription's (or SetPlan's) billing period
    paid_through: datetime | None = None  # the end of what invoices paid for
    # A cancelled subscription whose allowance lasts its paid months: the allowance after them.
    allowance_after_paid: int | None = None
    # What refunds or disputes withheld from the current month's grant before it began (its part
    # of a payment's months taken back): an upgrade within the month is granted less it too.
    allowance_withheld: int = 0
    # The account's own rate limits (set through SetPlan); a limit left None is its plan's.
    limits: RateLimits = RateLimits()
    # What its expired holds do, if the account has its own setting (SetPlan); None: its plan's.
    expired_holds: ExpiredHolds | None = None
    # Its plan's rollover of unused allowance (meter_begin_period); None: what is left expires.
    rollover: Rollover | None = None

    @property
    def subscription_managed(self) -> bool:
        """Allowance follows paid invoices instead of the calendar."""
        return self.subscription_ref is not None

    @property
    def allowance_granted(self) -> bool:
        return self.granted_period_start == self.period.start
