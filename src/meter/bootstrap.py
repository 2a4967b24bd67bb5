"""The composition root: builds the database, storage, use cases, gRPC server and sweeper from
settings. Nothing here runs at import time; `start` does it all, `Service.stop` undoes it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from meter import catalog as catalog_file
from meter.catalog import Catalog
from meter.client import MeterClient
from meter.config import Settings
from meter.grpc.server import GrpcServer
from meter.service.context import Limits, Meter
from meter.service.sweeper import run_sweeper
from meter.storage import fast_paths
from meter.storage.clock import DatabaseClock
from meter.storage.database import Timeouts, create_engine, dsn
from meter.storage.embedded import EmbeddedPostgres
from meter.storage.fast_paths import FastPaths
from meter.storage.migrate import upgrade_async
from meter.storage.postgres import PostgresStorage
from meter.webhooks.app import PATH as WEBHOOK_PATH
from meter.webhooks.app import WebhookServer

log = logging.getLogger(__name__)


@dataclass
class Database:
    url: str
    embedded: EmbeddedPostgres | None


async def open_database(settings: Settings) -> Database:
    """The configured Postgres, or an embedded one in the data folder; migrated either way."""
    embedded = None
    url = settings.database_url
    if url is None:
        embedded = await asyncio.to_thread(EmbeddedPostgres, settings.data_dir)
        url = embedded.url
    await upgrade_async(url)
    return Database(url, embedded)


def timeouts(settings: Settings) -> Timeouts:
    return Timeouts(
        statement_ms=settings.statement_timeout_ms,
        lock_ms=settings.lock_timeout_ms,
        idle_in_transaction_ms=settings.idle_in_transaction_timeout_ms,
    )


def engine_for(settings: Settings, url: str) -> AsyncEngine:
    return create_engine(url, pool_size=settings.db_pool_size, timeouts=timeouts(settings))


@dataclass
class Connections:
    """The general path's SQLAlchemy engine and the hot statements' asyncpg pool."""

    engine: AsyncEngine
    fast_pool: asyncpg.Pool

    async def close(self) -> None:
        await self.fast_pool.close()
        await self.engine.dispose()


async def connect(settings: Settings, url: str) -> Connections:
    """Both pools open connections on demand: nothing is dialled here."""
    fast_pool = await fast_paths.create_pool(dsn(url), size=settings.db_fast_pool_size, timeouts=timeouts(settings))
    return Connections(engine_for(settings, url), fast_pool)


def build_meter(
    settings: Settings, connections: Connections, *, clock: DatabaseClock | None, catalog: Catalog | None
) -> Meter:
    clock = clock or DatabaseClock()
    fast = FastPaths(connections.fast_pool, clock, acquire_timeout=settings.statement_timeout_ms / 1000)
    return Meter(
        catalog=catalog or catalog_file.load(settings.catalog_path),
        storage=PostgresStorage(connections.engine, fast, clock),
        limits=Limits(
            buckets=settings.buckets,
            default_ttl_seconds=settings.default_ttl_seconds,
            max_ttl_seconds=settings.max_ttl_seconds,
            max_credit_tokens=settings.max_credit_tokens,
        ),
    )


@dataclass
class Service:
    settings: Settings
    database: Database
    connections: Connections
    meter: Meter
    grpc: GrpcServer
    webhooks: WebhookServer
    _webhook_client: MeterClient
    _stop_sweeper: asyncio.Event
    _sweeper: asyncio.Task[None]

    async def stop(self) -> None:
        """Drain: webhooks stop first (Stripe retries what they refuse), then health turns
        NOT_SERVING and in-flight RPCs finish within the grace, then everything closes."""
        await self.webhooks.stop()
        await self._webhook_client.close()
        await self.grpc.stop(self.settings.shutdown_grace_seconds)
        self._stop_sweeper.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sweeper
        await self.connections.close()
        if self.database.embedded is not None:
            await asyncio.to_thread(self.database.embedded.stop)


async def start(settings: Settings, *, clock: DatabaseClock | None = None, catalog: Catalog | None = None) -> Service:
    # Read the catalog first: a malformed one must stop the start before anything else runs.
    catalog = catalog or catalog_file.load(settings.catalog_path)
    database = await open_database(settings)
    connections = await connect(settings, database.url)
    meter = build_meter(settings, connections, clock=clock, catalog=catalog)
    server = GrpcServer(meter, settings.grpc_addr)
    await server.start()
    webhook_client, webhooks = await start_webhooks(settings, target=server.address)
    stop = asyncio.Event()
    sweeper = asyncio.create_task(run_sweeper(meter, settings.sweep_interval_seconds, stop), name="sweeper")
    log.info("meter serving gRPC on %s (catalog %s, %d buckets)", server.address, catalog.version, settings.buckets)
    log.info("Stripe webhooks on http://%s%s", webhooks.address, WEBHOOK_PATH)
    return Service(settings, database, connections, meter, server, webhooks, webhook_client, stop, sweeper)


async def start_webhooks(settings: Settings, *, target: str) -> tuple[MeterClient, WebhookServer]:
    """The Stripe adapter on METER_HTTP_ADDR, a gRPC client of the service at `target`."""
    # Wait for meter while it restarts (Stripe would otherwise retry only much later), but no
    # longer than Stripe is willing to wait for an answer.
    client = MeterClient(target, wait_for_ready=True, timeout_seconds=settings.webhook_rpc_timeout_seconds)
    server = WebhookServer(client, settings.stripe_webhook_secrets, settings.http_addr)
    await server.start()
    return client, server
