"""The background sweeper: gives back expired holds, crosses period boundaries of idle
accounts, ends the grants whose expiry has come (meter_end_grants, through meter_roll_over: the
same function a call runs when it finds one due, so each ends once), folds past days' usage
totals and prunes Stripe payloads past their retention (meter.service.retention). Safe with
several replicas sweeping at once: each item is settled in its own transaction under its row
lock, and an item already handled is skipped (payloads another replica is pruning are left to
it)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import date

from meter import metrics
from meter.domain.errors import MeterError
from meter.service.context import Meter
from meter.service.periods import roll_over
from meter.service.ports import Grants, History, Holds, Payloads, Store
from meter.service.retention import prune
from meter.service.settle import expire

log = logging.getLogger(__name__)

BATCH = 500


@dataclass
class SweepCount:
    holds_expired: int = 0
    periods_rolled: int = 0
    grants_due: int = 0  # accounts whose grants' expiry had come (their grants ended)
    expiring_told: int = 0  # accounts told their month's allowance expires soon (balance.expiring)
    usage_day_folded: date | None = None  # the past day whose usage totals this sweep folded
    payloads_pruned: Payloads = Payloads()  # Stripe payloads deleted past their retention (logged by prune)


async def sweep_once(meter: Meter) -> SweepCount:
    count = SweepCount()

    async def due(store: Holds) -> tuple[list[tuple[str, str]], list[str], tuple[int, float]]:
        return await store.expired_holds(BATCH), await store.ended_periods(BATCH), await store.open_holds_summary()

    holds, accounts, (open_holds, lag) = await meter.storage.transaction(due)
    metrics.OPEN_HOLDS.set(open_holds)
    metrics.SWEEPER_LAG.set(lag)
    for account_id, hold_id in holds:
        if await expire(meter, account_id=account_id, hold_id=hold_id):
            count.holds_expired += 1
    for account_id in accounts:
        if await roll_over(meter, account_id):
            count.periods_rolled += 1

    async def grants_due(store: Grants) -> list[str]:
        return await store.grants_due(BATCH)

    for account_id in await meter.storage.transaction(grants_due):

        async def end(store: Store, account_id: str = account_id) -> None:
            await store.roll_over(account_id)

        await meter.storage.transaction(end)
        count.grants_due += 1

    notice = meter.parameters.expiring_notice_hours
    if notice:

        async def tell(store: Holds) -> int:
            return await store.tell_expiring(notice, BATCH)

        count.expiring_told = await meter.storage.transaction(tell)

    async def fold(store: History) -> date | None:
        return await store.fold_usage(BATCH)

    count.usage_day_folded = await meter.storage.transaction(fold)
    count.payloads_pruned = await prune(meter)
    return count


async def run_sweeper(meter: Meter, interval_seconds: float, stop: asyncio.Event) -> None:
    """Sweep every `interval_seconds` until `stop` is set; a failed sweep is logged and retried."""
    while not stop.is_set():
        try:
            count = await sweep_once(meter)
            metrics.SWEEPS.labels("ok").inc()
            if count.holds_expired or count.periods_rolled:
                log.info("sweep: %d holds expired, %d periods rolled over", count.holds_expired, count.periods_rolled)
        except MeterError as exc:
            metrics.SWEEPS.labels("failed").inc()
            log.warning("sweep failed: %s", exc)
        except Exception:
            metrics.SWEEPS.labels("failed").inc()
            log.exception("sweep failed")
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_seconds)
        except TimeoutError:
            pass
