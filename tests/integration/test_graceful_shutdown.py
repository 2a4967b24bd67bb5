"""SIGTERM under load: health turns NOT_SERVING, an RPC in flight finishes, new RPCs are refused
cleanly, the process exits 0 within its grace period, and every acknowledged write is in the
database.

"Cleanly": UNAVAILABLE, or CANCELLED for a call gRPC had received but meter had not started when
the core server stopped (gRPC cancels those itself) — and such a call must have changed nothing."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc
from meterlab.testbed import ServerProcess
from support import eventually, funded_account, new_id, reserve_request

GRACE_SECONDS = 8


async def test_sigterm_drains_in_flight_rpcs_and_loses_no_acknowledged_write(
    database_url: str, engine: AsyncEngine
) -> None:
    server = ServerProcess(
        database_url, {"METER_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS), "METER_LOCK_TIMEOUT_MS": "60000"}
    )
    try:
        await server.ready()
        channel = grpc.aio.insecure_channel(server.address)
        stub = meter_pb2_grpc.MeterServiceStub(channel)
        # Enterprise: no catalog rate limit caps the load `meter serve` is under here.
        account = await funded_account(stub, 10**9, plan="enterprise")
        busy = await funded_account(stub, 0, plan="enterprise")
        health = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert (await health.read()).status == health_pb2.HealthCheckResponse.SERVING

        committed: list[str] = []
        cancelled_reserves: list[str] = []  # request ids
        cancelled_commits: list[str] = []  # reservation ids
        t0 = time.monotonic()
        codes: set[grpc.StatusCode] = set()
        failures: list[str] = []
        stopping = asyncio.Event()

        async def load() -> None:
            while not stopping.is_set():
                request, rid = reserve_request(account), ""
                try:
                    rid = (await stub.Reserve(request, timeout=20)).reservation_id
                    await stub.Commit(pb.CommitRequest(reservation_id=rid, input_tokens=10, output_tokens=5))
                    committed.append(rid)
                except grpc.aio.AioRpcError as error:
                    step = "Commit" if rid else "Reserve"
                    if error.code() == grpc.StatusCode.CANCELLED and rid:
                        cancelled_commits.append(rid)
                    elif error.code() == grpc.StatusCode.CANCELLED:
                        cancelled_reserves.append(request.request_id)
                    else:
                        codes.add(error.code())
                    failures.append(f"{step} {error.code().name} {error.details()} at {time.monotonic() - t0:.2f}s")
                    if error.code() == grpc.StatusCode.UNAVAILABLE:
                        return

        loaders = [asyncio.create_task(load()) for _ in range(8)]

        async def done_so_far() -> int:
            return len(committed)

        await eventually(done_so_far, lambda n: n >= 20)

        async with engine.connect() as blocker:
            # An Adjust that will still be waiting for this row lock when SIGTERM arrives.
            await blocker.execute(text("SELECT 1 FROM accounts WHERE account_id = :a FOR NO KEY UPDATE"), {"a": busy})
            adjust_id = new_id("adj")
            request = pb.AdjustRequest(
                account_id=busy, pool=pb.POOL_PURCHASED, delta=700, reason="drain", request_id=adjust_id
            )

            async def adjust() -> pb.AdjustResponse:
                return await stub.Adjust(request)

            in_flight = asyncio.create_task(adjust())
            await eventually(lambda: _lock_waiters(engine, busy), lambda n: n >= 1)
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            assert (await health.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            refused = await _new_call_outcome(server.address, account)
            await blocker.rollback()  # the in-flight Adjust may now finish
        adjusted = await in_flight

        stopping.set()
        await asyncio.gather(*loaders)
        assert await asyncio.to_thread(server.process.wait, GRACE_SECONDS + 10) == 0
        await channel.close()
    finally:
        server.kill()

    assert refused == grpc.StatusCode.UNAVAILABLE
    assert adjusted.balance.purchased_remaining == 700
    assert codes <= {grpc.StatusCode.UNAVAILABLE}, failures
    unanswered = await _effects(engine, account, cancelled_reserves, cancelled_commits)
    assert unanswered == (0, 0), f"a cancelled call changed something: {failures}"
    async with engine.connect() as connection:
        durable = set(
            (
                await connection.execute(
                    text(
                        "SELECT account_id || '/' || replace(hold_id::text, '-', '') FROM holds "
                        "WHERE account_id = :a AND status = 'committed'"
                    ),
                    {"a": account},
                )
            ).scalars()
        )
        applied = (
            await connection.execute(text("SELECT delta FROM adjustments WHERE request_id = :r"), {"r": adjust_id})
        ).scalar_one()
    assert set(committed) <= durable and applied == 700


async def _effects(engine: AsyncEngine, account: str, reserves: list[str], commits: list[str]) -> tuple[int, int]:
    """Holds made by cancelled Reserves, and cancelled Commits that charged their hold."""
    async with engine.connect() as connection:
        made = await connection.execute(
            text("SELECT count(*) FROM holds WHERE account_id = :a AND request_id = ANY(:r)"),
            {"a": account, "r": reserves},
        )
        charged = await connection.execute(
            text(
                "SELECT count(*) FROM holds WHERE account_id = :a AND status = 'committed' "
                "AND account_id || '/' || replace(hold_id::text, '-', '') = ANY(:c)"
            ),
            {"a": account, "c": commits},
        )
        return int(made.scalar_one()), int(charged.scalar_one())


async def _lock_waiters(engine: AsyncEngine, _account: str) -> int:
    async with engine.connect() as connection:
        return int(
            (
                await connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE '%accounts%' AND datname = current_database()"
                    )
                )
            ).scalar_one()
        )


async def _new_call_outcome(address: str, account: str) -> grpc.StatusCode:
    """A call on a fresh channel after SIGTERM: refused, not accepted and not crashed."""
    async with grpc.aio.insecure_channel(address) as fresh:
        try:
            await meter_pb2_grpc.MeterServiceStub(fresh).GetBalance(pb.GetBalanceRequest(account_id=account), timeout=5)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK
