"""Alembic environment: async engine, lock_timeout before DDL, one migrator at a time.

Several replicas may start together; an advisory lock makes the others wait and then find
nothing to do. lock_timeout keeps a migration from queueing behind a long transaction while
every request queues behind the migration. The SQL functions are installed from their files after
the migrations, in the same transaction (meter.storage.functions): migrations hold no copies.
"""

from __future__ import annotations

import asyncio
import logging

from alembic import context
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from meter.storage.functions import install

log = logging.getLogger("meter.migrate")

MIGRATION_LOCK_ID = 0x6D65746572  # "meter"


def _run(connection: Connection) -> None:
    connection.execute(text("SET lock_timeout = '5s'"))
    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    # Migrations are hand-written SQL (constraints, triggers, partial indexes): no autogenerate.
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=False)
    with context.begin_transaction():
        before = context.get_context().get_current_revision()
        context.run_migrations()
        after = context.get_context().get_current_revision()
        installed: list[str] = []
        # The files are the head schema's functions (their types, their tables): a database left
        # at an older revision (a test of upgrades) gets them when it reaches the head.
        if after == context.script.get_current_head():
            installed = install(connection)
            if role := context.config.attributes.get("service_role"):
                connection.execute(text("SELECT meter_grant_service_role(:role)"), {"role": role})
    # One line for what changed (alembic's own lines, each with its migration's docstring, are
    # quieted in meter.logs); nothing when nothing did.
    if before != after:
        log.info("database schema migrated from %s to %s", before or "empty", after)
    if installed:
        log.info("SQL functions installed from their files: %d", len(installed))


async def _main() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "meter.storage.migrate sets sqlalchemy.url"
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `meter migrate`")
asyncio.run(_main())
