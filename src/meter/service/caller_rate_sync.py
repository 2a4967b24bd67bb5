"""The background sync of per-caller counts: every interval, write this replica's counts and read
the other replicas' (one statement); about every minute, delete rows nobody reads any more."""

from __future__ import annotations

import asyncio
import logging
import uuid

from meter.domain.caller_rates import CallerRates
from meter.domain.errors import MeterError
from meter.service.context import Meter
from meter.service.ports import CallerRateCounts

log = logging.getLogger(__name__)

KEEP_SECONDS = 60


async def sync_once(meter: Meter, rates: CallerRates, replica: str, *, forget: bool = False) -> None:
    second = rates.second
    mine = rates.mine()

    async def work(store: CallerRateCounts) -> None:
        rates.theirs(await store.sync_caller_rates(replica, mine, second - 1))
        if forget:
            await store.forget_caller_rates(second - KEEP_SECONDS)

    await meter.storage.transaction(work)


async def run_caller_rate_sync(meter: Meter, rates: CallerRates, interval_seconds: float, stop: asyncio.Event) -> None:
    """Until `stop`; a failed sync is logged and tried again at the next interval (meanwhile each
    replica goes on counting its own calls against the last counts it read)."""
    replica = str(uuid.uuid4())
    passes = 0
    while not stop.is_set():
        passes += 1
        try:
            await sync_once(meter, rates, replica, forget=passes % max(1, round(KEEP_SECONDS / interval_seconds)) == 0)
        except MeterError as exc:
            log.warning("caller rate sync failed: %s", exc)
        except Exception:
            log.exception("caller rate sync failed")
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_seconds)
        except TimeoutError:
            pass
