"""What `meter endpoints`, `meter deliveries` and `meter retention` share: they work on the database
directly (METER_DATABASE_URL, or the embedded one), like `meter audit`, through a Meter built for
the one command, not over gRPC."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from meter.config import Settings
from meter.domain.errors import MeterError

if TYPE_CHECKING:  # the server stack is imported when a command runs, not to parse arguments
    from meter.service.context import Meter


def run_with_meter(settings: Settings, work: Callable[[Meter], Awaitable[int]]) -> int:
    """`work`'s exit status; a refusal (an unknown endpoint, a bad URL) is printed, exit 2."""
    try:
        return with_database(settings, lambda: asyncio.run(_with_meter(settings, work)))
    except MeterError as error:
        print(f"meter: {error}", file=sys.stderr)
        return 2


def with_database(settings: Settings, command: Callable[[], int]) -> int:
    """Run a command that uses the database; one it cannot reach is a line naming the database and
    the setting (exit 2), not a traceback."""
    from meter.storage.engine import shown, unreachable

    try:
        return command()
    except Exception as error:
        reason = unreachable(error)
        if reason is None:
            raise
        where = (
            f"the database at {shown(settings.database_url)} (METER_DATABASE_URL)"
            if settings.database_url
            else f"the embedded PostgreSQL in {settings.data_dir.resolve()} (METER_DATA_DIR)"
        )
        print(f"meter: cannot use {where}: {reason}", file=sys.stderr)
        return 2


async def _with_meter(settings: Settings, work: Callable[[Meter], Awaitable[int]]) -> int:
    from meter import bootstrap

    database_server = await bootstrap.open_database_server(settings, create=False)
    connections = await bootstrap.connect(settings, database_server.url)
    try:
        return await work(bootstrap.build_meter(settings, connections, clock=None, catalog=None))
    finally:
        await connections.close()
        await database_server.stop()
