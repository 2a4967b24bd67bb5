"""The CLI's commands that run the server stack: `serve`, `webhooks` (the adapter alone),
`migrate` and `audit` (on the database directly)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from meter import bootstrap
from meter.catalog import CatalogError
from meter.cli.direct import with_database
from meter.config import Settings
from meter.grpc.handling import Readiness
from meter.storage import migrate
from meter.storage.audit import audit
from meter.webhooks.app import PATH as WEBHOOK_PATH


def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        if args.command == "serve":
            return _run_fast(_serve(settings))
        if args.command == "migrate":
            return with_database(settings, lambda: asyncio.run(_migrate(settings)))
        if args.command == "webhooks":
            return asyncio.run(_webhooks(settings, args.target or settings.grpc_addr))
        return with_database(settings, lambda: asyncio.run(_audit(settings, args.account)))
    except CatalogError as exc:
        print(f"meter: {exc}", file=sys.stderr)
        return 2


async def _serve(settings: Settings) -> int:
    """Listens at once; health says NOT_SERVING until the database is ready. SIGTERM, SIGINT or
    SIGHUP drains: health NOT_SERVING, new calls refused, calls in flight finish within the grace."""
    stopping = _stop_signals()
    service = await bootstrap.start(settings, ready_within=None, watch=_announce(settings))
    print(f"meter: gRPC on {service.grpc.address}", flush=True)
    print(f"meter: Stripe webhooks on http://{service.webhooks.address}{WEBHOOK_PATH}", flush=True)
    if service.http_json is not None:
        print(f"meter: HTTP/JSON (Connect) on http://{service.http_json.address}", flush=True)
    if not service.grpc.gate.readiness.ready:
        print(f"meter: not ready yet: {service.grpc.gate.readiness.detail}", flush=True)
    await stopping.wait()
    logging.getLogger("meter").info("stopping: draining in-flight RPCs (grace %.1f s)", settings.shutdown_grace_seconds)
    await service.stop()
    return 0


def _announce(settings: Settings) -> Callable[[Readiness], None]:
    """What a person at the terminal reads of readiness: each reason meter is not ready yet (once
    per reason, with the setting to look at), and "ready" once calls are served."""
    where = "METER_DATABASE_URL" if settings.database_url else f"the embedded PostgreSQL in {settings.data_dir}"

    def announce(readiness: Readiness) -> None:
        if readiness.ready:
            print("meter: ready: serving calls (Ctrl-C stops; calls in flight finish first)", flush=True)
        elif readiness.detail.startswith("database not reachable"):
            print(f"meter: not ready yet: {readiness.detail} (check {where}); retrying", flush=True)
        else:
            print(f"meter: not ready yet: {readiness.detail}", flush=True)

    return announce


def _run_fast(main: Coroutine[Any, Any, int]) -> int:
    """Serve on uvloop: the same asyncio API, with a faster loop for the RPC hot path."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _stop_signals() -> asyncio.Event:
    """Set on SIGINT, SIGTERM or SIGHUP (a closed terminal): each drains and stops the embedded
    PostgreSQL. Handlers are installed before anything slow starts."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stopping.set)
    return stopping


async def _webhooks(settings: Settings, target: str) -> int:
    client, server = await bootstrap.start_webhooks(settings, target=target, token=settings.webhook_token)
    print(f"meter: Stripe webhooks on http://{server.address}{WEBHOOK_PATH} -> gRPC {target}", flush=True)
    await _stop_signals().wait()
    await server.stop()
    await client.close()
    return 0


async def _migrate(settings: Settings) -> int:
    database_server = await bootstrap.open_database_server(settings)
    await migrate.upgrade_async(database_server.url, settings.service_role)
    print("meter: schema is up to date")
    await database_server.stop()
    return 0


async def _audit(settings: Settings, account_id: str | None) -> int:
    database_server = await bootstrap.open_database_server(settings, create=False)
    engine = bootstrap.engine_for(settings, database_server.url)
    try:
        report = await audit(engine, account_id)
    finally:
        await engine.dispose()
        await database_server.stop()
    for discrepancy in report.discrepancies:
        print(f"MISMATCH {discrepancy}")
    verdict = "clean" if report.clean else f"{len(report.discrepancies)} discrepancies"
    print(f"meter audit: {report.accounts} accounts, {verdict}")
    return 0 if report.clean else 1
