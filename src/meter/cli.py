"""`meter serve | migrate | audit | account | usage | webhooks | endpoints | deliveries | health |
callers`: the operator's
commands (and `bench` and `chaos` when the lab is installed: see `Command`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Coroutine
from datetime import date
from importlib.metadata import entry_points
from typing import Any, Protocol

import uvloop

from meter import bootstrap, console, delivery_commands, logs
from meter.catalog import CatalogError
from meter.client import MeterClient, MeterRpcError
from meter.config import ConfigError, Settings
from meter.domain.callers import hash_token, new_token
from meter.grpc import tls
from meter.storage import migrate
from meter.storage.audit import audit
from meter.webhooks.app import HEALTH_PATH, replay
from meter.webhooks.app import PATH as WEBHOOK_PATH


class Command(Protocol):
    """A command another installed package adds to `meter` (entry point group `meter.commands`):
    the lab adds `bench` and `chaos`, which are tooling, not the product."""

    def add(self, commands: Any) -> None: ...
    def run(self, settings: Settings, args: argparse.Namespace) -> int: ...


def _plugins(commands: Any) -> dict[str, Command]:
    plugins: dict[str, Command] = {}
    for entry in entry_points(group="meter.commands"):
        command: Command = entry.load()
        command.add(commands)
        plugins[entry.name] = command
    return plugins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meter", description="Token metering service for an LLM product.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="start the gRPC service (embedded Postgres without METER_DATABASE_URL)")
    commands.add_parser("migrate", help="bring the database schema up to date")
    audit_parser = commands.add_parser("audit", help="check that every balance follows from the ledger")
    audit_parser.add_argument("--account", help="audit one account only")
    webhooks = commands.add_parser("webhooks", help="run the Stripe webhook adapter alone, or replay an event")
    webhooks.add_argument("--target", help="meter's gRPC address (default: METER_GRPC_ADDR)")
    webhook_commands = webhooks.add_subparsers(dest="webhooks_command")
    replay_parser = webhook_commands.add_parser("replay", help="run a stored (e.g. rejected) event again")
    replay_parser.add_argument("event_id")
    replay_parser.add_argument("--target", dest="replay_target", help="meter's gRPC address")
    account = commands.add_parser("account", help="an account as a human reads it (from a running meter)")
    account_commands = account.add_subparsers(dest="account_command", required=True)
    show = account_commands.add_parser("show", help="balance, plan, period, open holds and recent entries")
    show.add_argument("account_id")
    show.add_argument("--target", help="meter's gRPC address (default: METER_GRPC_ADDR)")
    usage = commands.add_parser(
        "usage", help="an account's usage by UTC day, model, provider or label (from a running meter)"
    )
    usage.add_argument("account_id")
    usage.add_argument(
        "--from", dest="first", type=date.fromisoformat, help="first UTC day, YYYY-MM-DD (default: --to - 29 days)"
    )
    usage.add_argument("--to", dest="last", type=date.fromisoformat, help="last UTC day, included (default: today)")
    usage.add_argument("--by", choices=console.USAGE_GROUPINGS, default="day")
    usage.add_argument(
        "--label",
        dest="labels",
        action="append",
        default=[],
        metavar="KEY",
        help="also split rows by this label key's values (repeatable; keys the catalog sums usage by)",
    )
    usage.add_argument(
        "--where",
        action="append",
        default=[],
        type=_label_value,
        metavar="KEY=VALUE",
        help="only calls with this label value (repeatable)",
    )
    usage.add_argument("--target", help="meter's gRPC address (default: METER_GRPC_ADDR)")
    purchases = commands.add_parser("purchases", help="purchases (from a running meter)")
    purchases_commands = purchases.add_subparsers(dest="purchases_command", required=True)
    refused = purchases_commands.add_parser(
        "refused", help="payments Stripe took that meter refused to credit, newest first, with why: to refund"
    )
    refused.add_argument("--account", dest="account_id", default="", help="only this account's")
    refused.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    refused.add_argument("--target", help="meter's gRPC address (default: METER_GRPC_ADDR)")
    health = commands.add_parser("health", help="exit 0 if the meter on this machine serves (container health check)")
    health.add_argument("--url", help="its health URL (default: /healthz on METER_HTTP_ADDR)")
    callers = commands.add_parser("callers", help="caller credentials")
    callers_commands = callers.add_subparsers(dest="callers_command", required=True)
    callers_commands.add_parser("new-token", help="print a new bearer token and the token_sha256 to configure")
    delivery_commands.add(commands)
    plugins = _plugins(commands)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"meter: {exc}", file=sys.stderr)
        return 2
    long_running = args.command == "serve" or (args.command == "webhooks" and args.webhooks_command is None)
    logs.configure(settings.log_level, settings.log_format if long_running else "text")
    try:
        if args.command == "serve":
            return _run_fast(_serve(settings))
        if args.command == "health":
            return _health(args.url or _health_url(settings.http_addr))
        if args.command == "callers":
            token = new_token()
            print(f"token:        {token}\ntoken_sha256: {hash_token(token)}")
            return 0
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
        if args.command in ("endpoints", "deliveries"):
            return delivery_commands.run(settings, args)
        if args.command in plugins:
            return plugins[args.command].run(settings, args)
        if args.command in ("account", "usage", "purchases"):
            return asyncio.run(_console(settings, args, args.target or settings.grpc_addr))
        if args.command == "webhooks":
            target = getattr(args, "replay_target", None) or args.target or settings.grpc_addr
            if args.webhooks_command == "replay":
                return asyncio.run(_replay(settings, target, args.event_id))
            return asyncio.run(_webhooks(settings, target))
        return asyncio.run(_audit(settings, args.account))
    except (CatalogError, ConfigError) as exc:
        print(f"meter: {exc}", file=sys.stderr)
        return 2


async def _serve(settings: Settings) -> int:
    """Listens at once; health says NOT_SERVING until the database is ready. SIGTERM or SIGINT
    drains: health NOT_SERVING, new calls refused, calls in flight finish within the grace."""
    stopping = _stop_signals()
    service = await bootstrap.start(settings, ready_within=None)
    print(f"meter: serving gRPC on {service.grpc.address}", flush=True)
    print(f"meter: Stripe webhooks on http://{service.webhooks.address}{WEBHOOK_PATH}", flush=True)
    await stopping.wait()
    logging.getLogger("meter").info("stopping: draining in-flight RPCs (grace %.1f s)", settings.shutdown_grace_seconds)
    await service.stop()
    return 0


def _run_fast(main: Coroutine[Any, Any, int]) -> int:
    """Serve on uvloop: the same asyncio API, with a faster loop for the RPC hot path."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _stop_signals() -> asyncio.Event:
    """Set on SIGINT or SIGTERM (handlers installed before anything slow starts)."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    return stopping


async def _until_stopped() -> None:
    await _stop_signals().wait()


def _health_url(http_addr: str) -> str:
    host, _, port = http_addr.rpartition(":")
    if host.strip("[]") in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}{HEALTH_PATH}"


def _health(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            print(f"meter: {json.load(answer)['status']}")
            return 0
    except urllib.error.HTTPError as error:
        print(f"meter: {error.code} {error.read().decode(errors='replace')}", file=sys.stderr)
    except OSError as error:
        print(f"meter: {url}: {error}", file=sys.stderr)
    return 1


def _label_value(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not key or not equals:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _client(settings: Settings, target: str, token: str | None = None) -> MeterClient:
    """A client of the meter at `target` with the CLI's token (METER_TOKEN) and TLS files."""
    return MeterClient(target, token=token or settings.token, credentials=tls.channel_credentials(settings))


async def _console(settings: Settings, args: argparse.Namespace, target: str) -> int:
    try:
        async with _client(settings, target) as client:
            if args.command == "account":
                print(await console.account_show(client, args.account_id))
            elif args.command == "purchases":
                print(await console.refused_purchases(client, args.account_id, args.limit))
            else:
                first, last = console.default_range(args.last)
                report = await console.usage_report(
                    client,
                    args.account_id,
                    args.first or first,
                    args.last or last,
                    args.by,
                    args.labels,
                    dict(args.where),
                )
                print(report)
    except MeterRpcError as exc:
        print(f"meter: {exc}", file=sys.stderr)
        return 1
    return 0


async def _webhooks(settings: Settings, target: str) -> int:
    client, server = await bootstrap.start_webhooks(settings, target=target, token=settings.webhook_token)
    print(f"meter: Stripe webhooks on http://{server.address}{WEBHOOK_PATH} -> gRPC {target}", flush=True)
    await _until_stopped()
    await server.stop()
    await client.close()
    return 0


async def _replay(settings: Settings, target: str, event_id: str) -> int:
    async with _client(settings, target) as client:
        outcome = await replay(client, event_id)
    print(f"meter: event {event_id}: {outcome.status} {outcome.reason}".rstrip())
    # Still rejected (or meter unreachable) is a failure the operator must see.
    return 0 if outcome.status in ("applied", "duplicate", "ignored") else 1


async def _migrate(settings: Settings) -> int:
    database = await bootstrap.open_database(settings)
    await migrate.upgrade_async(database.url)
    print("meter: schema is up to date")
    if database.embedded is not None:
        await asyncio.to_thread(database.embedded.stop)
    return 0


async def _audit(settings: Settings, account_id: str | None) -> int:
    database = await bootstrap.open_database(settings)
    engine = bootstrap.engine_for(settings, database.url)
    try:
        report = await audit(engine, account_id)
    finally:
        await engine.dispose()
        if database.embedded is not None:
            await asyncio.to_thread(database.embedded.stop)
    for discrepancy in report.discrepancies:
        print(f"MISMATCH {discrepancy}")
    verdict = "clean" if report.clean else f"{len(report.discrepancies)} discrepancies"
    print(f"meter audit: {report.accounts} accounts, {verdict}")
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
