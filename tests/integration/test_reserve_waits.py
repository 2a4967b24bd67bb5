"""A Reserve that finds every balance row with its tokens locked waits for one instead of taking
the tokens from all the rows at once, which would lock every row of the account and drag the next
Reserves after it; a wait that turns into a queue takes from all the rows after a bound."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from conftest import StartMeter
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from meter.storage.audit import audit
from support import balance, eventually, expect_error, funded_account, reserve_request


def reserves_across_rows() -> float:
    """Reserves taken from all of an account's rows at once."""
    return REGISTRY.get_sample_value("meter_reserves_across_rows_total") or 0.0


async def _lock_every_row(connection: AsyncConnection, account: str) -> None:
    """What a settling call does to one row, done to all of them, in an open transaction."""
    await connection.execute(text("SELECT 1 FROM buckets WHERE account_id = :a FOR UPDATE"), {"a": account})


async def _longest_waiting_reserve(engine: AsyncEngine) -> float:
    """Seconds the longest-running Reserve waiting on a lock has been running (0: none waits)."""
    async with engine.connect() as connection:
        return float(
            (
                await connection.execute(
                    text(
                        "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - query_start)), 0) "
                        "FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%meter_reserve(%'"
                    )
                )
            ).scalar_one()
        )


async def _reserves_waiting_on_a_lock(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return (
            await connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND query LIKE '%meter_reserve(%'"
                )
            )
        ).scalar_one()


async def test_a_reserve_waits_for_a_locked_row_instead_of_locking_them_all(
    meters: StartMeter, engine: AsyncEngine
) -> None:
    # A wait bound far beyond the test's polling, so a slow machine cannot make the wait end
    # before the test has seen it.
    meter = await meters(reserve_wait_ms=30_000)
    account = await funded_account(meter.stub, 10_000)
    before = reserves_across_rows()
    async with engine.connect() as locker:
        await _lock_every_row(locker, account)
        call = asyncio.ensure_future(meter.stub.Reserve(reserve_request(account)))
        await eventually(lambda: _reserves_waiting_on_a_lock(engine), lambda n: n == 1)
        assert not call.done()
        await locker.rollback()  # the settling call finishes: the row is free
    hold = await call
    assert hold.held_tokens == 100
    assert reserves_across_rows() == before  # placed on the row it waited for
    snapshot = await balance(meter.stub, account)
    assert (snapshot.held, snapshot.purchased_remaining) == (100, 9_900)
    assert (await audit(engine, account)).clean


@pytest.mark.parametrize("wait_ms", [200, 0])
async def test_a_wait_past_its_bound_takes_from_all_the_rows(
    meters: StartMeter, engine: AsyncEngine, wait_ms: int
) -> None:
    """Rows held longer than the bound (a long transaction, a queue), or no wait configured: the
    Reserve waits for all the rows, and is placed exactly once."""
    meter = await meters(reserve_wait_ms=wait_ms)
    account = await funded_account(meter.stub, 10_000)
    before = reserves_across_rows()
    async with engine.connect() as locker:
        await _lock_every_row(locker, account)
        call = asyncio.ensure_future(meter.stub.Reserve(reserve_request(account)))
        # Past the bound, the Reserve no longer waits for one row: it waits for them all.
        await eventually(lambda: _longest_waiting_reserve(engine), lambda seconds: seconds > wait_ms / 1000 + 0.1)
        assert not call.done()
        await locker.rollback()
    hold = await call
    assert hold.held_tokens == 100
    assert reserves_across_rows() == before + 1
    snapshot = await balance(meter.stub, account)
    assert (snapshot.held, snapshot.purchased_remaining) == (100, 9_900)
    async with engine.connect() as connection:
        holds = (
            await connection.execute(text("SELECT count(*) FROM holds WHERE account_id = :a"), {"a": account})
        ).scalar_one()
    assert holds == 1
    assert (await audit(engine, account)).clean


async def test_a_reserve_the_account_cannot_cover_is_refused_without_waiting_for_its_rows(
    meters: StartMeter, engine: AsyncEngine
) -> None:
    """Refused at once, with every row locked by someone else: it would otherwise queue for all of
    them (a drained account's refusals one after the other), and here time out on the locks."""
    meter = await meters()
    account = await funded_account(meter.stub, 1_000)
    before = await balance(meter.stub, account)
    short = before.allowance_remaining + before.purchased_remaining + 1
    async with engine.connect() as holder:
        await _lock_every_row(holder, account)
        await expect_error(
            meter.stub.Reserve(reserve_request(account, input_tokens=short, max_output_tokens=1)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "INSUFFICIENT_TOKENS",
        )
        assert holder.in_transaction(), "refused while the rows were still locked"
        await holder.rollback()
    after = await balance(meter.stub, account)
    assert (after.allowance_remaining, after.purchased_remaining, after.held) == (
        before.allowance_remaining,
        before.purchased_remaining,
        0,
    )
    assert (await audit(engine, account)).clean
