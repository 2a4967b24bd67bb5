"""Opening accounts and crediting pools: shared by purchases, adjustments and plans."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from meter.catalog import Catalog
from meter.domain.accounts import Account
from meter.domain.ledger import EntryKind
from meter.domain.periods import calendar_month
from meter.domain.pools import PoolName
from meter.service.periods import current_account
from meter.service.ports import Conflict, Store


async def open_account(store: Store, account: Account, now: datetime) -> Account:
    """Create the account with its buckets and begin its first allowance month (granted its
    plan's allowance, unless a subscription's invoice has yet to pay for it)."""
    if not await store.open_account(account, now):
        raise Conflict("the account was created concurrently")
    opened = await store.lock_account(account.account_id)
    assert opened is not None
    return opened


def free_account(account_id: str, catalog: Catalog, now: datetime, buckets: int) -> Account:
    """An account created by its first credit or checkout: the default plan, calendar months."""
    return Account(
        account_id=account_id,
        plan_id=catalog.default_plan,
        monthly_allowance=catalog.plan(catalog.default_plan).monthly_allowance_tokens,
        period=calendar_month(now),  # a placeholder: insert_account places it in its month
        allowance_total=0,
        debt=0,
        bucket_count=buckets,
        subscription_ref=None,
        plan_event_time=None,
        rollover=catalog.plan(catalog.default_plan).rollover,
    )


async def locked_current_account(store: Store, account: Account, now: datetime) -> Account:
    """The account row locked (before any bucket: the lock order) and in its current period."""
    locked = await store.lock_account(account.account_id)
    assert locked is not None
    if not locked.period.has_ended(now):
        return locked
    current = await current_account(store, account.account_id)
    assert current is not None
    return current


async def credit_pool(
    store: Store,
    account: Account,
    kind: EntryKind,
    pool: PoolName,
    amount: int,
    now: datetime,
    *,
    ref: str,
    note: str | None,
) -> Account:
    """Credit a pool: it pays the debt first, the rest is spread so every row can serve holds
    (meter_credit, storage/sql). The caller holds the account's row lock."""
    paid = await store.credit(account.account_id, kind, pool, amount, now, ref=ref, note=note)
    return replace(account, debt=account.debt - paid)
