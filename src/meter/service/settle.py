"""Commit, Release and expiry: how a hold ends, exactly once.

Each runs under the hold's row lock, so a Commit racing a Release (or the sweeper) sees the
other's outcome and answers accordingly instead of settling twice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from meter import metrics
from meter.domain import ids
from meter.domain.accounts import Account
from meter.domain.amounts import MAX_CALL_TOKENS, require_tokens
from meter.domain.balance import Balance
from meter.domain.errors import ReservationNotFound, ReservationReleased
from meter.domain.holds import Hold, HoldStatus, Settlement, Usage, settle
from meter.domain.ledger import EntryKind, LedgerEntry
from meter.domain.pools import PoolName, draw, find_row, pool_total, rebalance
from meter.service import balance_warnings
from meter.service.context import Meter
from meter.service.periods import roll_over_if_ended
from meter.service.ports import Store


@dataclass(frozen=True)
class Charge:
    usage: Usage
    balance: Balance
    new: bool = True  # False: the answer to a replayed Commit


async def commit(meter: Meter, *, reservation_id: str, input_tokens: int, output_tokens: int) -> Charge:
    account_id = ids.reservation_account(reservation_id)
    require_tokens("input_tokens", input_tokens, minimum=0, maximum=MAX_CALL_TOKENS)
    require_tokens("output_tokens", output_tokens, minimum=0, maximum=MAX_CALL_TOKENS)
    # The common case in one round trip; replays, overage, debt, boundaries and refusals go
    # through the general path below.
    fast = await meter.storage.commit_fast(account_id, ids.hold_id(reservation_id), input_tokens, output_tokens)
    if fast is not None:
        charge = Charge(*fast)
        metrics.TOKENS_CHARGED.inc(charge.usage.charged_tokens)
        await balance_warnings.announce(meter, charge.balance)
        return charge
    metrics.GENERAL_COMMITS.inc()

    async def work(store: Store) -> Charge:
        hold, account, now = await _locked_hold(store, account_id, reservation_id)
        if hold.status is HoldStatus.COMMITTED:
            hold.check_commit_replay(input_tokens, output_tokens)
            assert hold.usage is not None
            return Charge(hold.usage, await store.balance(account_id), new=False)
        if hold.status is HoldStatus.RELEASED:
            raise ReservationReleased(reservation_id)
        charged = hold.pricing.tokens(input_tokens, output_tokens)
        if hold.status is HoldStatus.EXPIRED:
            # The sweeper gave the hold back already; the usage happened, so charge it anyway.
            settlement = Settlement(0, 0, 0, 0, 0, overage=charged)
        else:
            settlement = settle(hold, charged, allowance_expired=hold.period_start != account.period.start)
        unbilled = await _apply(store, account, hold, settlement, now, parked=hold.status is HoldStatus.OPEN)
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            charged_tokens=charged,
            cost_micros=hold.pricing.cost_micros(input_tokens, output_tokens),
            unbilled_tokens=unbilled,
            late=hold.status is HoldStatus.EXPIRED or now >= hold.expires_at,
        )
        await store.finish_hold(hold, HoldStatus.COMMITTED, now, usage)
        await store.add_usage(hold, usage, now)
        return Charge(usage, await store.balance(account_id))

    charge = await meter.storage.transaction(work)
    if charge.new:
        metrics.TOKENS_CHARGED.inc(charge.usage.charged_tokens)
    await balance_warnings.announce(meter, charge.balance)
    return charge


async def release(meter: Meter, *, reservation_id: str) -> Balance:
    account_id = ids.reservation_account(reservation_id)

    async def work(store: Store) -> Balance:
        hold, account, now = await _locked_hold(store, account_id, reservation_id)
        hold.check_releasable()
        if hold.status is HoldStatus.OPEN:
            await _give_back(store, account, hold, now, HoldStatus.RELEASED)
        elif hold.status is HoldStatus.EXPIRED:
            # Its tokens came back at expiry; record the Release all the same, so that a Commit
            # after it is refused as after any Release (the caller said the call did not happen).
            await store.finish_hold(hold, HoldStatus.RELEASED, now)
        return await store.balance(account_id)

    return await meter.storage.transaction(work)


async def expire(meter: Meter, *, account_id: str, hold_id: str) -> bool:
    """Give back one hold past its expiry (the sweeper's job); False if it was settled meanwhile."""

    async def work(store: Store) -> bool:
        hold, now = await store.lock_hold(account_id, hold_id)
        if hold is None or hold.status is not HoldStatus.OPEN or now < hold.expires_at:
            return False
        account, _ = await store.account_state(account_id)
        assert account is not None
        account = await roll_over_if_ended(store, account, now)
        await _give_back(store, account, hold, now, HoldStatus.EXPIRED)
        return True

    return await meter.storage.transaction(work)


async def _locked_hold(store: Store, account_id: str, reservation_id: str) -> tuple[Hold, Account, datetime]:
    hold, now = await store.lock_hold(account_id, ids.hold_id(reservation_id))
    if hold is None:
        raise ReservationNotFound(reservation_id)
    account, _ = await store.account_state(account_id)
    assert account is not None, "a hold's account exists"
    return hold, await roll_over_if_ended(store, account, now), now


async def _give_back(store: Store, account: Account, hold: Hold, now: datetime, status: HoldStatus) -> None:
    settlement = settle(hold, 0, allowance_expired=hold.period_start != account.period.start)
    await _apply(store, account, hold, settlement, now, parked=True)
    await store.finish_hold(hold, status, now)


async def _apply(store: Store, account: Account, hold: Hold, s: Settlement, now: datetime, *, parked: bool) -> int:
    """Write a settlement: hold parts back or used, overage drawn, shortfall to debt. Returns the
    tokens nobody could pay for (now debt). `parked` says the hold's tokens still sit on its
    buckets as held (an expired hold's were given back by the sweeper)."""
    ref = hold.reservation_id
    drawn_allowance = drawn_purchased = shortfall = 0
    entries: list[LedgerEntry] = []
    if s.overage:
        drawn_allowance, drawn_purchased, shortfall = await _settle_with_overage(store, hold, s, parked=parked)
    elif parked:
        returned_allowance, returned_purchased, entries = await _pay_debt_from_returns(store, account, s, ref, now)
        for pool, bucket, held, returned, used in (
            (PoolName.ALLOWANCE, hold.allowance_bucket, hold.allowance_held, returned_allowance, s.used_allowance),
            (PoolName.PURCHASED, hold.purchased_bucket, hold.purchased_held, returned_purchased, s.used_purchased),
        ):
            if held:
                await store.shift_bucket(hold.account_id, pool, bucket, available=returned, held=-held, used=used)
    entries = [
        LedgerEntry(EntryKind.USAGE, PoolName.ALLOWANCE, -(s.used_allowance + drawn_allowance), reservation_id=ref),
        LedgerEntry(EntryKind.USAGE, PoolName.PURCHASED, -(s.used_purchased + drawn_purchased), reservation_id=ref),
        LedgerEntry(EntryKind.USAGE, PoolName.DEBT, -shortfall, reservation_id=ref),
        LedgerEntry(EntryKind.EXPIRY, PoolName.ALLOWANCE, -s.expired_allowance, reservation_id=ref),
        *entries,
    ]
    await store.append(hold.account_id, entries, now)
    if shortfall:
        locked = await store.lock_account(account.account_id)
        assert locked is not None
        await store.save_account(replace(locked, debt=locked.debt + shortfall), now)
    return shortfall


async def _pay_debt_from_returns(
    store: Store, account: Account, s: Settlement, ref: str, now: datetime
) -> tuple[int, int, list[LedgerEntry]]:
    """Tokens coming back from a hold pay the account's debt first, as credits do: an account
    never shows tokens available while it owes some. Returns what is left to give back."""
    if not account.debt or not (s.returned_allowance or s.returned_purchased):
        return s.returned_allowance, s.returned_purchased, []
    locked = await store.lock_account(account.account_id)  # lock order: account before buckets
    assert locked is not None
    paid_allowance = min(locked.debt, s.returned_allowance)
    paid_purchased = min(locked.debt - paid_allowance, s.returned_purchased)
    paid = paid_allowance + paid_purchased
    if paid:
        await store.save_account(replace(locked, debt=locked.debt - paid), now)
    entries = [
        LedgerEntry(EntryKind.DEBT_PAYMENT, PoolName.ALLOWANCE, -paid_allowance, reservation_id=ref),
        LedgerEntry(EntryKind.DEBT_PAYMENT, PoolName.PURCHASED, -paid_purchased, reservation_id=ref),
        LedgerEntry(EntryKind.DEBT_PAYMENT, PoolName.DEBT, paid, reservation_id=ref),
    ]
    return s.returned_allowance - paid_allowance, s.returned_purchased - paid_purchased, entries


async def _settle_with_overage(store: Store, hold: Hold, s: Settlement, *, parked: bool) -> tuple[int, int, int]:
    """Usage beyond the hold: the hold is used up, the rest comes from what is available
    (allowance first), and what is still missing becomes debt."""
    locked = await store.lock_account(hold.account_id)  # lock order: account before buckets
    assert locked is not None
    rows = await store.lock_buckets(hold.account_id)
    home = find_row(rows, PoolName.ALLOWANCE, hold.allowance_bucket)
    if parked:
        home.held -= hold.allowance_held
        find_row(rows, PoolName.PURCHASED, hold.purchased_bucket).held -= hold.purchased_held
    allowance, purchased = pool_total(rows, PoolName.ALLOWANCE), pool_total(rows, PoolName.PURCHASED)
    taken = draw(s.overage, allowance, purchased)
    rebalance(rows, PoolName.ALLOWANCE, allowance - taken.allowance)
    rebalance(rows, PoolName.PURCHASED, purchased - taken.purchased)
    home.used += s.used_allowance + s.used_purchased + s.overage
    await store.write_buckets(hold.account_id, rows)
    return taken.allowance, taken.purchased, taken.shortfall
