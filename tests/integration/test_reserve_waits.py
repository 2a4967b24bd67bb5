"""A Reserve that finds every balance row with its tokens locked waits for one (migration 0011)
instead of handing over to the general path, which would lock every row of the account and drag
the next Reserves after it; a wait that turns into a queue is handed over after a bound."""

from __future__ import annotations

import asyncio

import pytest
from conftest import StartMeter
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from meter.storage.audit import audit
from support import balance, eventually, funded_account, reserve_request


def general_reserves() -> float:
    return REGISTRY.get_sample_value("meter_general_path_total", {"method": "Reserve"}) or 0.0


async def _lock_every_row(connection: AsyncConnection, account: str) -> None:
    """What a settling call does to one row, done to all of them, in an open transaction."""
    await connection.execute(text("SELECT 1 FROM buckets WHERE account_id = :a FOR UPDATE"), {"a": account})


async def _reserves_waiting_on_a_lock(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return (
            await connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND query LIKE '%meter_reserve_fast%'"
                )
            )
        ).scalar_one()


async def test_a_reserve_waits_for_a_locked_row_instead_of_handing_over(
    meters: StartMeter, engine: AsyncEngine
) -> None:
    # A wait bound far beyond the test's polling, so a slow machine cannot make the wait end
    # before the test has seen it.
    meter = await meters(reserve_wait_ms=30_000)
    account = await funded_account(meter.stub, 10_000)
    before = general_reserves()
    async with engine.connect() as locker:
        await _lock_every_row(locker, account)
        call = asyncio.ensure_future(meter.stub.Reserve(reserve_request(account)))
        await eventually(lambda: _reserves_waiting_on_a_lock(engine), lambda n: n == 1)
        assert not call.done()
        await locker.rollback()  # the settling call finishes: the row is free
    hold = await call
    assert hold.held_tokens == 100
    assert general_reserves() == before  # placed by the one-statement path after its wait
    snapshot = await balance(meter.stub, account)
    assert (snapshot.held, snapshot.purchased_remaining) == (100, 9_900)
    assert (await audit(engine, account)).clean


@pytest.mark.parametrize("wait_ms", [200, 0])
async def test_a_wait_past_its_bound_goes_to_the_general_path(
    meters: StartMeter, engine: AsyncEngine, wait_ms: int
) -> None:
    """Rows held longer than the bound (a long transaction, a queue), or no wait configured: the
    general path takes the Reserve, waits for all the rows, and places it exactly once."""
    meter = await meters(reserve_wait_ms=wait_ms)
    account = await funded_account(meter.stub, 10_000)
    before = general_reserves()
    async with engine.connect() as locker:
        await _lock_every_row(locker, account)
        call = asyncio.ensure_future(meter.stub.Reserve(reserve_request(account)))
        await eventually(lambda: asyncio.sleep(0, general_reserves()), lambda n: n == before + 1)
        assert not call.done()
        await locker.rollback()
    hold = await call
    assert hold.held_tokens == 100
    snapshot = await balance(meter.stub, account)
    assert (snapshot.held, snapshot.purchased_remaining) == (100, 9_900)
    async with engine.connect() as connection:
        holds = (
            await connection.execute(text("SELECT count(*) FROM holds WHERE account_id = :a"), {"a": account})
        ).scalar_one()
    assert holds == 1
    assert (await audit(engine, account)).clean
