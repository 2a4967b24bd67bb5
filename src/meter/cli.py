"""`meter serve | migrate | audit`: the operator's commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from meter import bootstrap
from meter.catalog import CatalogError
from meter.config import ConfigError, Settings
from meter.storage.audit import audit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meter", description="Token metering service for an LLM product.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="start the gRPC service (embedded Postgres without METER_DATABASE_URL)")
    commands.add_parser("migrate", help="bring the database schema up to date")
    audit_parser = commands.add_parser("audit", help="check that every balance follows from the ledger")
    audit_parser.add_argument("--account", help="audit one account only")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"meter: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            return asyncio.run(_serve(settings))
        if args.command == "migrate":
            return asyncio.run(_migrate(settings))
        return asyncio.run(_audit(settings, args.account))
    except (CatalogError, ConfigError) as exc:
        print(f"meter: {exc}", file=sys.stderr)
        return 2


async def _serve(settings: Settings) -> int:
    service = await bootstrap.start(settings)
    print(f"meter: serving gRPC on {service.grpc.address}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    logging.getLogger("meter").info("stopping: draining in-flight RPCs")
    await service.stop()
    return 0


async def _migrate(settings: Settings) -> int:
    database = await bootstrap.open_database(settings)
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
