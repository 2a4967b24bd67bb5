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
        return asyncio.run(_with_meter(settings, work))
    except MeterError as error:
        print(f"meter: {error}", file=sys.stderr)
        return 2


async def _with_meter(settings: Settings, work: Callable[[Meter], Awaitable[int]]) -> int:
    from meter import bootstrap

    database_server = await bootstrap.open_database_server(settings)
    connections = await bootstrap.connect(settings, database_server.url)
    try:
        return await work(bootstrap.build_meter(settings, connections, clock=None, catalog=None))
    finally:
        await connections.close()
        await database_server.stop()
