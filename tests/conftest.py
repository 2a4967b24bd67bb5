"""Test session: one real PostgreSQL (embedded, or METER_TEST_DATABASE_URL's server with a fresh
database), migrated once; real meter servers on free ports, called over real gRPC channels.

Every test that touched the database ends with `meter audit`'s check: balances follow from the
ledger.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_emulator import StripeEmulator, running_emulator

from meter.storage.audit import audit
from meter.storage.embedded import EmbeddedPostgres
from meter.storage.engine import create_engine
from meter.storage.migrate import upgrade_async
from support import RunningMeter, start_meter

StartMeter = Callable[..., Awaitable[RunningMeter]]


async def _fresh_database(server_url: str) -> tuple[str, Callable[[], Awaitable[None]]]:
    url = make_url(server_url)
    name = f"meter_test_{uuid.uuid4().hex[:12]}"
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()

    async def drop() -> None:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    return url.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    server_url = os.environ.get("METER_TEST_DATABASE_URL")
    embedded = None
    if not server_url:
        embedded = EmbeddedPostgres(Path(tmp_path_factory.mktemp("meter-data")))
        server_url = embedded.url
    url, drop = await _fresh_database(server_url)
    await upgrade_async(url)
    yield url
    await drop()
    if embedded is not None:
        embedded.stop()


@pytest.fixture
async def empty_database(database_url: str) -> AsyncIterator[str]:
    """A database of its own on the session's server, never migrated (dropped afterwards)."""
    url, drop = await _fresh_database(database_url)
    yield url
    await drop()


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The tests' own connection, to look at ledger rows and buckets."""
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def meters(database_url: str, engine: AsyncEngine) -> AsyncIterator[StartMeter]:
    """Start as many real servers as a test needs (each with its own settings and clock).

    After the test, the servers stop and `meter audit`'s check must pass on the whole database.
    """
    running: list[RunningMeter] = []

    async def start(**settings: object) -> RunningMeter:
        meter = await start_meter(database_url, **settings)
        running.append(meter)
        return meter

    yield start
    for meter in reversed(running):
        await meter.stop()
    report = await audit(engine)
    assert report.clean, "meter audit failed after the test:\n" + "\n".join(map(str, report.discrepancies))


@pytest.fixture
async def meter(meters: StartMeter) -> RunningMeter:
    """A server with the default settings (16 buckets, the packaged catalog)."""
    return await meters()


@pytest.fixture(scope="module")
async def emulator() -> AsyncIterator[StripeEmulator]:
    """The Stripe API emulator (localstripe with Checkout Sessions), one per test file that asks."""
    async with running_emulator() as running:
        yield running
