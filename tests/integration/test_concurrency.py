"""Admission under concurrency: with room for exactly K holds, exactly K of many concurrent
Reserves are admitted, with the default buckets and with one bucket (the old one-row design), with
the calls coalesced (the default) and each its own statement."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.storage.audit import audit
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, funded_account, reserve_request

CALLERS = 200
ROOM_FOR = 37  # holds of 100 tokens that fit
HOLD = 100
UNAVAILABLE_RETRIES = 3


async def _race(meter: RunningMeter, account: str) -> list[pb.ReserveResponse | grpc.aio.AioRpcError]:
    """Each caller does what the README tells a client to: on UNAVAILABLE, send the same request
    again. When the last holds must be taken from all 16 rows, every Reserve still let through by
    the unlocked check queues for all of them in turn; on a starved CI machine one can wait past
    lock_timeout, which is an answer a client retries, not a wrong admission."""

    async def one(index: int) -> pb.ReserveResponse | grpc.aio.AioRpcError:
        request = reserve_request(account, request_id=f"race-{index}")
        for _ in range(UNAVAILABLE_RETRIES):
            try:
                return await meter.stub.Reserve(request)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    return error
        return await meter.stub.Reserve(request)

    return await asyncio.gather(*(one(i) for i in range(CALLERS)))


@pytest.mark.parametrize(("buckets", "coalesce"), [(16, 1), (1, 1), (16, 0)])
async def test_exactly_k_of_200_concurrent_reserves_are_admitted(  # type: ignore[no-untyped-def]
    meters, engine: AsyncEngine, buckets: int, coalesce: int
) -> None:
    meter = await meters(buckets=buckets, coalesce=coalesce)
    # Room for 37.5 holds: the last half hold must be refused, not squeezed in.
    account = await funded_account(meter.stub, ROOM_FOR * HOLD + HOLD // 2)
    results = await _race(meter, account)
    admitted = [r for r in results if isinstance(r, pb.ReserveResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(admitted) == ROOM_FOR
    assert {r.code() for r in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    snapshot = await balance(meter.stub, account)
    assert snapshot.held == ROOM_FOR * HOLD
    assert snapshot.purchased_remaining == HOLD // 2
    assert (await audit(engine, account)).clean
    # Settle them all concurrently too: half committed, half released.
    await asyncio.gather(
        *(
            meter.stub.Commit(pb.CommitRequest(reservation_id=r.reservation_id, input_tokens=30, output_tokens=30))
            if i % 2
            else meter.stub.Release(pb.ReleaseRequest(reservation_id=r.reservation_id))
            for i, r in enumerate(admitted)
        )
    )
    committed = ROOM_FOR // 2
    snapshot = await balance(meter.stub, account)
    assert snapshot.held == 0
    assert snapshot.purchased_remaining == ROOM_FOR * HOLD + HOLD // 2 - committed * 60
    assert snapshot.used_this_period == committed * 60


async def test_hot_account_holds_spread_over_buckets(meter: RunningMeter, engine: AsyncEngine) -> None:
    """Concurrent holds of one account land on different bucket rows (no single hot row)."""
    from sqlalchemy import text

    account = await funded_account(meter.stub, 160_000)
    await asyncio.gather(*(meter.stub.Reserve(reserve_request(account)) for _ in range(64)))
    async with engine.connect() as connection:
        used_buckets = (
            await connection.execute(
                text("SELECT count(*) FROM buckets WHERE account_id = :a AND held > 0"), {"a": account}
            )
        ).scalar_one()
    assert used_buckets >= 8
