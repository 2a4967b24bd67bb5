"""The transaction runner retries deadlocks and serialization failures (real ones, provoked in
Postgres) and nothing else; an unreachable database answers UNAVAILABLE."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from meter import bootstrap
from meter.config import Settings
from meter.grpc.server import GrpcServer
from meter.storage.engine import create_engine, run_transaction
from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc
from support import expect_error, reserve_request


@pytest.fixture
async def scratch_table(engine: AsyncEngine) -> AsyncIterator[str]:
    """Dropped after the test: the session's database is meter's schema (test_schema_file)."""
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as connection:
        await connection.execute(text(f"CREATE TABLE {name} (id int PRIMARY KEY, value int NOT NULL)"))
        await connection.execute(text(f"INSERT INTO {name} VALUES (1, 0), (2, 0)"))
    yield name
    async with engine.begin() as connection:
        await connection.execute(text(f"DROP TABLE {name}"))


async def test_a_deadlock_is_retried_until_both_transactions_succeed(database_url: str, scratch_table: str) -> None:
    engine = create_engine(database_url, pool_size=4)
    first_locked, second_locked = asyncio.Event(), asyncio.Event()
    attempts = {"a": 0, "b": 0}

    def transfer(name: str, mine: int, theirs: int, locked: asyncio.Event, other: asyncio.Event):  # type: ignore[no-untyped-def]
        async def work(connection: AsyncConnection) -> None:
            attempts[name] += 1
            await connection.execute(text(f"UPDATE {scratch_table} SET value = value + 1 WHERE id = {mine}"))
            locked.set()
            await other.wait()  # both hold one row: each now waits for the other's -> deadlock
            await connection.execute(text(f"UPDATE {scratch_table} SET value = value + 1 WHERE id = {theirs}"))

        return work

    try:
        await asyncio.gather(
            run_transaction(engine, transfer("a", 1, 2, first_locked, second_locked)),
            run_transaction(engine, transfer("b", 2, 1, second_locked, first_locked)),
        )
        async with engine.connect() as connection:
            values = (await connection.execute(text(f"SELECT value FROM {scratch_table} ORDER BY id"))).scalars().all()
    finally:
        await engine.dispose()
    assert values == [2, 2]  # both transfers applied exactly once
    assert sorted(attempts.values()) == [1, 2]  # the deadlock victim ran again


async def test_a_serialization_failure_is_retried(database_url: str, scratch_table: str) -> None:
    engine = create_engine(database_url, pool_size=4)
    read_done = asyncio.Event()
    attempts = 0

    async def serializable_increment(connection: AsyncConnection) -> None:
        nonlocal attempts
        attempts += 1
        await connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        await connection.execute(text(f"SELECT value FROM {scratch_table} WHERE id = 1"))
        if attempts == 1:
            read_done.set()
            # Another transaction commits a change to the row this snapshot has already seen.
            async with engine.begin() as other:
                await other.execute(text(f"UPDATE {scratch_table} SET value = 100 WHERE id = 1"))
        await connection.execute(text(f"UPDATE {scratch_table} SET value = value + 1 WHERE id = 1"))

    try:
        await run_transaction(engine, serializable_increment)
        async with engine.connect() as connection:
            value = (await connection.execute(text(f"SELECT value FROM {scratch_table} WHERE id = 1"))).scalar_one()
    finally:
        await engine.dispose()
    assert attempts == 2
    assert value == 101


async def test_other_database_errors_are_not_retried(database_url: str, scratch_table: str) -> None:
    engine = create_engine(database_url, pool_size=2)
    attempts = 0

    async def duplicate(connection: AsyncConnection) -> None:
        nonlocal attempts
        attempts += 1
        await connection.execute(text(f"INSERT INTO {scratch_table} VALUES (1, 0)"))

    try:
        with pytest.raises(IntegrityError):
            await run_transaction(engine, duplicate)
    finally:
        await engine.dispose()
    assert attempts == 1


async def test_unreachable_database_is_unavailable_with_a_reason() -> None:
    settings = replace(Settings(), database_url="postgresql://meter@127.0.0.1:9/none", statement_timeout_ms=1000)
    connections = await bootstrap.connect(settings, settings.database_url or "")
    server = GrpcServer(bootstrap.build_meter(settings, connections, clock=None, catalog=None), "127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = meter_pb2_grpc.MeterServiceStub(channel)
            await expect_error(
                stub.GetBalance(pb.GetBalanceRequest(account_id="acme")),
                grpc.StatusCode.UNAVAILABLE,
                "STORAGE_UNAVAILABLE",
            )
            # Reserve and Commit try their one-statement path first, on the other pool.
            await expect_error(
                stub.Reserve(reserve_request("acme")), grpc.StatusCode.UNAVAILABLE, "STORAGE_UNAVAILABLE"
            )
            await expect_error(
                stub.Commit(pb.CommitRequest(reservation_id=f"acme/{'0' * 32}", input_tokens=1)),
                grpc.StatusCode.UNAVAILABLE,
                "STORAGE_UNAVAILABLE",
            )
    finally:
        await server.stop(0)
        await connections.close()


async def test_a_pool_with_no_connection_free_in_time_is_storage_unavailable(database_url: str) -> None:
    """Seen under 200 concurrent Reserves: SQLAlchemy's pool timeout reached the caller as
    INTERNAL, which a client does not retry. It is an overload: UNAVAILABLE, retry with the key."""
    import pytest
    from sqlalchemy import text as sql
    from sqlalchemy.ext.asyncio import create_async_engine

    from meter.domain.errors import StorageUnavailable
    from meter.storage.engine import run_transaction

    url = database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        async with engine.connect() as busy:
            await busy.execute(sql("SELECT 1"))

            async def work(connection):  # type: ignore[no-untyped-def]
                return (await connection.execute(sql("SELECT 1"))).scalar_one()

            with pytest.raises(StorageUnavailable, match="no database connection free in time"):
                await run_transaction(engine, work)
        assert await run_transaction(engine, work) == 1
    finally:
        await engine.dispose()
