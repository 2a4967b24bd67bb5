"""Budgets under an account (migration 0032's budgets and budget_buckets): set through
meter_set_budget, deleted through meter_delete_budget, counted by the hot path's functions, read
back summed over their rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meter.domain.budgets import Budget, BudgetKey, BudgetUnit, BudgetWindow
from meter.storage.queries import NOW, Queries

# A budget counting an earlier period than its window's now starts again at its next call: until
# then it is shown as it will be (nothing used, nothing held).
_BUDGETS = f"""
SELECT g.budget_id, g.label_key, g.label_value, g.unit, g.cap, g.budget_window, p.period_start, p.period_end,
       CASE WHEN g.period_start = p.period_start THEN sum(b.used) ELSE 0 END AS used,
       CASE WHEN g.period_start = p.period_start THEN sum(b.held) ELSE 0 END AS held
FROM budgets AS g
JOIN accounts AS a ON a.account_id = g.account_id
CROSS JOIN LATERAL meter_budget_period(g.budget_window, g.period_start, a.period_start, a.period_end, {NOW}) AS p
JOIN budget_buckets AS b ON b.account_id = g.account_id AND b.budget_id = g.budget_id
WHERE g.account_id = :account_id AND (CAST(:label_key AS text) IS NULL OR
      (g.label_key = :label_key AND g.label_value = :label_value))
  AND (CAST(:budget_ids AS bigint[]) IS NULL OR g.budget_id = ANY(CAST(:budget_ids AS bigint[])))
GROUP BY g.budget_id, g.label_key, g.label_value, g.unit, g.cap, g.budget_window, g.period_start, p.period_start,
         p.period_end
ORDER BY g.label_key, g.label_value
"""


class BudgetQueries(Queries):
    async def set_budget(
        self, account_id: str, key: BudgetKey, unit: BudgetUnit, cap: int, window: BudgetWindow | None
    ) -> str:
        """meter_set_budget's outcome: created, changed, unit_changed, window_changed or
        account_not_found."""
        row = await self._row(
            "SELECT outcome FROM meter_set_budget(:account_id, :label_key, :label_value, :unit, :cap, "
            f"CAST(:window AS text), {NOW})",
            account_id=account_id,
            label_key=key.label_key,
            label_value=key.label_value,
            unit=unit.value,
            cap=cap,
            window=window.value if window else None,
        )
        assert row is not None
        return str(row["outcome"])

    async def delete_budget(self, account_id: str, key: BudgetKey) -> bool:
        row = await self._row(
            "SELECT meter_delete_budget(:account_id, :label_key, :label_value) AS deleted",
            account_id=account_id,
            label_key=key.label_key,
            label_value=key.label_value,
        )
        assert row is not None
        return bool(row["deleted"])

    async def budgets(
        self, account_id: str, key: BudgetKey | None = None, budget_ids: Sequence[int] | None = None
    ) -> list[Budget]:
        """The account's budgets (or the one of `key`, or those of `budget_ids`), with what the
        current period used and holds."""
        rows = await self._rows(
            _BUDGETS,
            account_id=account_id,
            label_key=key.label_key if key else None,
            label_value=key.label_value if key else None,
            budget_ids=list(budget_ids) if budget_ids is not None else None,
        )
        return [_budget(row) for row in rows]

    async def announce_budget(self, account_id: str, budget: Budget, levels: int) -> int | None:
        """meter_announce_budget: the levels told before, or None when there is nothing new."""
        row = await self._row(
            "SELECT meter_announce_budget(:account_id, :budget_id, :period_start, CAST(:levels AS smallint)) AS before",
            account_id=account_id,
            budget_id=budget.budget_id,
            period_start=budget.period_start,
            levels=levels,
        )
        return None if row is None or row["before"] is None else int(row["before"])


def _budget(row: Mapping[str, Any]) -> Budget:
    return Budget(
        key=BudgetKey(row["label_key"], row["label_value"]),
        unit=BudgetUnit(row["unit"]),
        cap=row["cap"],
        used=int(row["used"]),
        held=int(row["held"]),
        period_start=row["period_start"],
        period_end=row["period_end"],
        budget_id=row["budget_id"],
        window=BudgetWindow(row["budget_window"]),
    )
