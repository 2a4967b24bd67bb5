"""`meter serve` listens at once but serves only once its database is reachable and migrated:
health NOT_SERVING, calls refused UNAVAILABLE NOT_READY, /healthz 503 and `meter health` exit 1
until then; SERVING, 200 and 0 after."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import make_url

from meter.storage.migrate import head_revision, upgrade_async
from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc
from meterlab.testbed import ServerProcess
from support import error_info, eventually, run_cli


@pytest.fixture
async def unborn_database(database_url: str) -> AsyncIterator[tuple[str, str]]:
    """(URL of a database that does not exist yet, admin URL to create it)."""
    url = make_url(database_url)
    name = f"meter_later_{uuid.uuid4().hex[:8]}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    yield url.set(database=name).render_as_string(hide_password=False), admin
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _health(address: str) -> int | None:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return None  # not listening yet
        return answer.status


async def _not_ready(server: ServerProcess, reason: str) -> None:
    """Health NOT_SERVING, calls refused NOT_READY saying `reason`, the container check failing."""
    await eventually(lambda: _health(server.address), lambda s: s == health_pb2.HealthCheckResponse.NOT_SERVING)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = meter_pb2_grpc.MeterServiceStub(channel)

        async def refusal() -> str:
            try:
                await stub.GetCatalog(pb.GetCatalogRequest(), timeout=5)
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE and error_info(error).reason == "NOT_READY"
                return error.details() or ""
            raise AssertionError("a call was served before meter was ready")

        await eventually(refusal, lambda detail: reason in detail)
    code, out, err = await run_cli("health", "--url", f"http://{server.http_address}/healthz")
    assert code == 1 and "503" in err and "NOT_SERVING" in err


async def _serving(server: ServerProcess) -> None:
    await server.ready()
    async with grpc.aio.insecure_channel(server.address) as channel:
        assert (await meter_pb2_grpc.MeterServiceStub(channel).GetCatalog(pb.GetCatalogRequest(), timeout=5)).version
    code, out, err = await run_cli("health", "--url", f"http://{server.http_address}/healthz")
    assert (code, out.strip()) == (0, "meter: SERVING"), err


async def test_not_serving_until_the_database_exists_then_migrated_and_serving(
    unborn_database: tuple[str, str],
) -> None:
    url, admin = unborn_database
    server = ServerProcess(url)
    try:
        await _not_ready(server, "database not reachable or not migrated")
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(f'CREATE DATABASE "{make_url(url).database}"')
        finally:
            await connection.close()
        await _serving(server)  # it retried, migrated and started serving on its own
    finally:
        assert await asyncio.to_thread(server.stop) == 0


async def test_without_migrating_on_start_it_waits_for_meter_migrate(unborn_database: tuple[str, str]) -> None:
    url, admin = unborn_database
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'CREATE DATABASE "{make_url(url).database}"')
    finally:
        await connection.close()
    server = ServerProcess(url, {"METER_MIGRATE_ON_START": "false"})
    try:
        await _not_ready(server, f"database at migration none, this code needs {head_revision()}; run `meter migrate`")
        await upgrade_async(url)
        await _serving(server)
    finally:
        assert await asyncio.to_thread(server.stop) == 0


async def test_a_database_running_other_sql_functions_waits_for_meter_migrate(
    unborn_database: tuple[str, str],
) -> None:
    """At this code's migration but with a function's text not its file's (an older release's, an
    operator's edit), a server that does not migrate refuses to serve; `meter migrate` puts the
    files' texts back, and it serves."""
    url, admin = unborn_database
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'CREATE DATABASE "{make_url(url).database}"')
    finally:
        await connection.close()
    await upgrade_async(url)
    database = await asyncpg.connect(url)
    try:
        await database.execute(  # the ledger's append-only trigger, weakened
            "CREATE OR REPLACE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN RETURN NEW; END; $$"
        )
        await database.execute("CREATE FUNCTION meter_leftover() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$")
    finally:
        await database.close()
    server = ServerProcess(url, {"METER_MIGRATE_ON_START": "false"})
    try:
        await _not_ready(server, "database runs other SQL functions (ledger_entries_append_only, meter_leftover)")
        code, out, err = await run_cli("migrate", env={"METER_DATABASE_URL": url})
        assert code == 0, err
        await _serving(server)
    finally:
        assert await asyncio.to_thread(server.stop) == 0


async def test_before_serving_it_opens_its_pool_and_prepares_the_hot_path_leaving_no_trace(
    unborn_database: tuple[str, str],
) -> None:
    """The first calls after a start find every pool connection open and the hot path's functions
    compiled on each (HotPath.warm_up): the warm-up's calls name no account, so nothing is written."""
    url, admin = unborn_database
    name = make_url(url).database
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
        server = ServerProcess(url, {"METER_DB_POOL_SIZE": "3"})
        try:
            await _serving(server)
            opened = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'meter'", name
            )
            assert opened == 3
        finally:
            assert await asyncio.to_thread(server.stop) == 0
        database = await asyncpg.connect(url)
        try:
            written = await database.fetchval(
                "SELECT (SELECT count(*) FROM accounts) + (SELECT count(*) FROM holds) "
                "+ (SELECT count(*) FROM ledger_entries) + (SELECT count(*) FROM usage_daily)"
            )
        finally:
            await database.close()
        assert written == 0
    finally:
        await connection.close()
