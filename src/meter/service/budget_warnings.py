"""Budget warnings: the first time in its period a budget's calls use 80, 90 or 95 % of its cap, or
leave it nothing to admit, say so once (a budget.warning or budget.exhausted event, a log line and
a metric), whichever request or replica saw it first.

A Commit (or ChargeUsage) answers with where its call's budgets stand (meter_budget_states: their
totals and the levels their period told, read in the Commit's own statement), so the common Commit
costs nothing more here; only one that shows a level not told yet opens a transaction, which adds
it under the budget row's lock (meter_announce_budget), at most four times per budget and period.
The levels are the balance warnings' (domain.balance.levels_reached).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from meter.domain.balance import WarningLevel
from meter.domain.balance_events import EventType
from meter.domain.budgets import Budget, BudgetState
from meter.domain.errors import StorageUnavailable
from meter.metrics import BUDGET_WARNINGS
from meter.service.context import Meter
from meter.service.ports import Store

log = logging.getLogger("meter.warnings")


async def announce(meter: Meter, account_id: str, states: Sequence[BudgetState]) -> None:
    budget_ids = [state.budget_id for state in states if state.untold]
    if not budget_ids:
        return

    async def work(store: Store) -> list[tuple[Budget, WarningLevel]]:
        told: list[tuple[Budget, WarningLevel]] = []
        for budget in await store.budgets(account_id, budget_ids=budget_ids):
            # meter_announce_budget says which of the levels reached its period had told already.
            reached = budget.levels_reached
            before = await store.announce_budget(account_id, budget, WarningLevel.to_bits(reached)) if reached else None
            if before is None:
                continue
            levels = sorted(reached - WarningLevel.from_bits(before), key=lambda level: level.bit)
            now = await store.now()
            for level in levels:
                await store.emit(account_id, _event(level), _data(budget, level), now)
                told.append((budget, level))
        return told

    try:
        told = await meter.storage.transaction(work)
    except StorageUnavailable:
        # The call's charge is durable; the next call that counts against the budget tells it.
        log.info("budget warning of %s not recorded: database unavailable", account_id)
        return
    for budget, level in told:
        BUDGET_WARNINGS.labels(level=level.value).inc()
        log.warning(
            "budget warning: account %s, budget %s=%s reached %s in the period from %s (used %d of %d %s)",
            account_id,
            budget.key.label_key,
            budget.key.label_value,
            "exhausted" if level is WarningLevel.EXHAUSTED else f"{level.value} %",
            budget.period_start.isoformat(),
            budget.used,
            budget.cap,
            budget.unit.value,
        )


def _event(level: WarningLevel) -> EventType:
    return EventType.BUDGET_EXHAUSTED if level is WarningLevel.EXHAUSTED else EventType.BUDGET_WARNING


def _data(budget: Budget, level: WarningLevel) -> dict[str, object]:
    return {
        "label_key": budget.key.label_key,
        "label_value": budget.key.label_value,
        "unit": budget.unit.value,
        "cap": budget.cap,
        "used": budget.used,
        "held": budget.held,
        "level": level.value,
        "period_start": budget.period_start.isoformat(),
    }
