"""Allowance months. The rules (when a month begins, what expires, what is granted, once) are SQL's:
meter_roll_over, meter_begin_month and meter_begin_period in storage/sql, which the hot-path
functions also run when a call finds its account's month ended. These are the calls the other use
cases make of them."""

from __future__ import annotations

from datetime import datetime

from meter.domain.accounts import Account
from meter.domain.periods import Period
from meter.service.context import Meter
from meter.service.ports import Store


async def roll_over(meter: Meter, account_id: str) -> bool:
    """Move an account whose period has ended into its current one, in its own transaction (the
    sweeper's way, for accounts no call touches); False when there was nothing to do."""

    async def work(store: Store) -> bool:
        account, now = await store.account_state(account_id)
        if account is None or not account.period.has_ended(now):
            return False
        await store.roll_over(account_id)
        return True

    return await meter.storage.transaction(work)


async def current_account(store: Store, account_id: str) -> Account | None:
    """The account in its current period (rolled over first if its period has ended)."""
    return await store.roll_over(account_id)


async def begin_month(store: Store, account: Account, now: datetime, *, expire_now: bool = False) -> Account:
    """Save `account` (its plan, its months' anchor and what it paid for) and begin the allowance
    month containing now: the allowance left expires, and what the month is granted (if anything)
    is meter_begin_month's to decide. The caller holds the account's row lock. Returns the account
    as it is then."""
    await store.save_plan(account, now)
    await store.begin_month(account.account_id, now, expire_now=expire_now)
    begun = await store.lock_account(account.account_id)
    assert begun is not None
    return begun


async def anchor_for(store: Store, account: Account, billing: Period) -> datetime:
    """The instant the account's months are counted from once `billing` is its billing period: the
    anchor it has while `billing` begins one of the months it counts (a renewal keeps it, and the
    31st stays the 31st), else the billing period's start."""
    anchor = account.month_anchor
    if anchor is None or (await store.allowance_month(anchor, billing.start)).start != billing.start:
        return billing.start
    return anchor
