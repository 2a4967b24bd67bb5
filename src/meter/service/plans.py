"""SetPlan: an account's plan and billing period.

Creating an account grants its plan's allowance for the current period. On an existing account:
an upgrade grants the difference at once, a downgrade applies from the next period, and a new
billing period (a subscription renewed or started) is a boundary: the allowance left expires and
the plan's allowance is granted for the new period. An event older than the one applied changes
nothing, so events may arrive in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from meter.domain import ids
from meter.domain.accounts import Account
from meter.domain.amounts import require_tokens
from meter.domain.balance import Balance
from meter.domain.errors import InvalidField
from meter.domain.ledger import EntryKind
from meter.domain.periods import Period, calendar_month
from meter.domain.pools import PoolName
from meter.service.accounts import credit_pool, locked_current_account, open_account
from meter.service.context import Meter
from meter.service.periods import begin_period
from meter.service.ports import Store

MAX_PERIOD = timedelta(days=366)


@dataclass(frozen=True)
class PlanChange:
    balance: Balance
    applied: bool


async def set_plan(
    meter: Meter,
    *,
    account_id: str,
    plan_id: str,
    period: Period | None = None,
    subscription_ref: str = "",
    event_time: datetime | None = None,
    monthly_allowance_tokens: int = 0,
) -> PlanChange:
    ids.account_id(account_id)
    allowance = _allowance(meter, plan_id, monthly_allowance_tokens)
    if period is not None and period.end - period.start > MAX_PERIOD:
        raise InvalidField("period_end", "a billing period is at most 366 days")
    if len(subscription_ref) > 255:
        raise InvalidField("subscription_ref", "at most 255 characters")

    async def work(store: Store) -> PlanChange:
        account, now = await store.account_state(account_id)
        wanted = Account(
            account_id=account_id,
            plan_id=plan_id,
            monthly_allowance=allowance,
            period=period or calendar_month(now),
            calendar_periods=period is None,
            allowance_total=0,
            debt=0,
            bucket_count=meter.limits.buckets,
            subscription_ref=subscription_ref or None,
            plan_event_time=event_time,
        )
        if account is None:
            await open_account(store, wanted, now)
            return PlanChange(await store.balance(account_id), applied=True)
        account = await locked_current_account(store, account, now)
        if event_time and account.plan_event_time and event_time < account.plan_event_time:
            return PlanChange(await store.balance(account_id), applied=False)
        await _change(store, account, wanted, period, now)
        return PlanChange(await store.balance(account_id), applied=True)

    return await meter.storage.transaction(work)


def _allowance(meter: Meter, plan_id: str, monthly_allowance_tokens: int) -> int:
    plan = meter.catalog.plan(plan_id)
    if plan.per_account:
        return require_tokens(
            "monthly_allowance_tokens", monthly_allowance_tokens, minimum=0, maximum=meter.limits.max_credit_tokens
        )
    if monthly_allowance_tokens:
        raise InvalidField("monthly_allowance_tokens", f"plan {plan_id!r} has its allowance in the catalog; leave it 0")
    return plan.monthly_allowance_tokens


async def _change(store: Store, account: Account, wanted: Account, period: Period | None, now: datetime) -> None:
    changed = replace(
        account,
        plan_id=wanted.plan_id,
        monthly_allowance=wanted.monthly_allowance,
        calendar_periods=wanted.calendar_periods,
        subscription_ref=wanted.subscription_ref,
        plan_event_time=wanted.plan_event_time or account.plan_event_time,
    )
    if period is not None and period != account.period:
        await begin_period(store, replace(changed, period=period), now)
        return
    upgrade = changed.monthly_allowance - account.allowance_total
    if upgrade > 0:
        changed = await credit_pool(
            store,
            changed,
            EntryKind.SUBSCRIPTION_GRANT,
            PoolName.ALLOWANCE,
            upgrade,
            now,
            ref=f"upgrade:{changed.plan_id}:{account.period.start.isoformat()}",
            note=changed.plan_id,
        )
        changed = replace(changed, allowance_total=changed.monthly_allowance)
    await store.save_account(changed, now)
