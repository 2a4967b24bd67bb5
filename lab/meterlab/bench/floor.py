"""The floor of meter's stack: the least a metering server built like meter can do per call.

The same stack as `meter serve` (grpc.aio on uvloop, asyncpg, PostgreSQL with synchronous commit)
answering the same Reserve and Commit the load generator sends, each with one guarded statement
and nothing else: Reserve takes the worst case from a one-row balance if it is there, Commit gives
back what the call did not use. No rules, no ledger, no idempotency, no metrics, no logs. What
meter does on top of this is what its rules cost; what this does is as fast as meter could be on
this machine, and `meter bench` runs it between meter's scenarios so that every report shows
meter ÷ floor.

Runs as `python -m meterlab.bench.floor`, configured like `meter serve` (METER_DATABASE_URL,
METER_GRPC_ADDR, METER_DB_POOL_SIZE), so the bench starts, measures and stops it the same way.
"""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.config import Settings
from meter.storage.engine import dsn
from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc

# One row per account, beside meter's tables in the bench's database.
CREATE = "CREATE TABLE IF NOT EXISTS bench_floor (account_id text PRIMARY KEY, balance bigint NOT NULL)"
FUND = (
    "INSERT INTO bench_floor (account_id, balance) SELECT unnest(CAST(:accounts AS text[])), :balance "
    "ON CONFLICT (account_id) DO UPDATE SET balance = excluded.balance"
)
DEBIT = "UPDATE bench_floor SET balance = balance - $2 WHERE account_id = $1 AND balance >= $2 RETURNING balance"
CREDIT = "UPDATE bench_floor SET balance = balance + $2 WHERE account_id = $1 RETURNING balance"


async def fund(engine: AsyncEngine, accounts: list[str], balance: int) -> None:
    """The floor's accounts, each with `balance` tokens (the bench funds meter's alike)."""
    async with engine.begin() as connection:
        await connection.execute(text(CREATE))
        await connection.execute(text(FUND), {"accounts": accounts, "balance": balance})


class FloorServicer(meter_pb2_grpc.MeterServiceServicer):
    """Reserve and Commit, one statement each; the reservation id carries what was held."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def Reserve(self, request: pb.ReserveRequest, context: grpc.aio.ServicerContext) -> pb.ReserveResponse:
        held = request.input_tokens + request.max_output_tokens
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(DEBIT, request.account_id, held)
        if row is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not enough tokens")
        return pb.ReserveResponse(reservation_id=f"{request.account_id}/{held}")

    async def Commit(self, request: pb.CommitRequest, context: grpc.aio.ServicerContext) -> pb.CommitResponse:
        account_id, _, held = request.reservation_id.rpartition("/")
        unused = max(0, int(held) - request.input_tokens - request.output_tokens)
        async with self._pool.acquire() as connection:
            await connection.fetchrow(CREDIT, account_id, unused)
        return pb.CommitResponse()


async def serve(settings: Settings) -> None:
    if settings.database_url is None:
        raise SystemExit("the floor serves on the bench's database: set METER_DATABASE_URL")
    pool = await asyncpg.create_pool(
        dsn(settings.database_url), min_size=settings.db_pool_size, max_size=settings.db_pool_size
    )
    server = grpc.aio.server()
    meter_pb2_grpc.add_MeterServiceServicer_to_server(FloorServicer(pool), server)
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    if not server.add_insecure_port(settings.grpc_addr):
        raise OSError(f"cannot listen on {settings.grpc_addr}")
    await server.start()
    await checks.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace=1)
    await pool.close()


def main() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(Settings.from_env()))


if __name__ == "__main__":
    main()
