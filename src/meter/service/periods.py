"""Period boundaries: expire what is left of the allowance and grant the next, exactly once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Protocol, TypeVar

from meter.domain.accounts import Account
from meter.domain.answers import Outcome
from meter.domain.balance_events import EventType
from meter.domain.ledger import EntryKind, LedgerEntry
from meter.domain.periods import following_period
from meter.domain.pools import PoolName
from meter.service.context import Meter
from meter.service.ports import Store


class _Answer(Protocol):
    @property
    def outcome(self) -> Outcome: ...


A = TypeVar("A", bound=_Answer)

# A boundary is crossed once; a second one in a row would need the clock to jump a whole period.
_ROLL_OVERS = 3


async def in_current_period(meter: Meter, account_id: str, call: Callable[[], Awaitable[A]]) -> A:
    """Run a hot-path call; when it finds the account's period ended (and changed nothing), move
    the account into its current period and run it again. The hot-path functions leave the
    boundary to roll_over_if_ended, its one home."""
    for _ in range(_ROLL_OVERS):
        answer = await call()
        if answer.outcome is not Outcome.PERIOD_ENDED:
            return answer
        await roll_over(meter, account_id)
    raise AssertionError(f"{account_id}: still at a period boundary after {_ROLL_OVERS} roll-overs")


async def roll_over(meter: Meter, account_id: str) -> bool:
    """Move an account whose period has ended into its current one, in its own transaction;
    False when there was nothing to do (not ended, or another call did it)."""

    async def work(store: Store) -> bool:
        account, now = await store.account_state(account_id)
        if account is None or not account.period.has_ended(now):
            return False
        await roll_over_if_ended(store, account, now)
        return True

    return await meter.storage.transaction(work)


async def roll_over_if_ended(store: Store, account: Account, now: datetime) -> Account:
    """Move an account whose period has ended into the period containing `now`.

    Runs on the first operation after the boundary (or in the sweeper). Of several transactions
    crossing the same boundary, claim_period lets exactly one through; the others wait for it
    and then read the account it left.
    """
    if not account.period.has_ended(now):
        return account
    following = following_period(account.period, now, calendar_months=account.calendar_periods)
    claimed = await store.claim_period(account, following, now)
    if claimed is None:
        reloaded, _ = await store.account_state(account.account_id)
        assert reloaded is not None
        return reloaded
    # A subscription's next allowance is granted when its invoice is paid, not by the calendar.
    return await begin_period(store, claimed, now, grant=not claimed.subscription_managed)


async def begin_period(store: Store, account: Account, now: datetime, *, grant: bool) -> Account:
    """Expire the allowance left from before and, with `grant`, grant `account.monthly_allowance`
    for `account.period` (already written). Allowance held by open holds stays held; it expires
    when those holds settle."""
    period_ref = f"period:{account.period.start.isoformat()}"
    unused = await store.locked_available(account.account_id, PoolName.ALLOWANCE)
    await store.append(
        account.account_id, [LedgerEntry(EntryKind.EXPIRY, PoolName.ALLOWANCE, -unused, ref=period_ref)], now
    )
    # What the period left unused is what a later refund of its invoice takes back from nothing.
    await store.end_subscription_payments(account.account_id, account.period.start, unused)
    await store.start_period_rows(account.account_id)
    granted = grant and account.monthly_allowance > 0
    account = replace(
        account,
        allowance_total=account.monthly_allowance if grant else 0,
        granted_period_start=account.period.start if grant else account.granted_period_start,
    )
    # Saved before the grant, so that the events of this change carry this period's allowance.
    await store.save_account(account, now)
    if unused:
        await store.emit(account.account_id, EventType.ALLOWANCE_EXPIRED, {"tokens": unused}, now)
    if not granted:
        return account
    debt_paid = await store.credit(
        account.account_id,
        EntryKind.SUBSCRIPTION_GRANT,
        PoolName.ALLOWANCE,
        account.monthly_allowance,
        now,
        ref=period_ref,
        note=account.plan_id,
    )  # pays debt first (and tells debt.cleared when that clears it)
    await store.emit(
        account.account_id,
        EventType.ALLOWANCE_GRANTED,
        {"tokens": account.monthly_allowance, "debt_paid": debt_paid, "reason": "period"},
        now,
    )
    return replace(account, debt=account.debt - debt_paid)
