"""Usage totals by day and model (migration 0006's usage_daily) and announced balance warnings."""

from __future__ import annotations

from datetime import date, datetime

from meter.domain.usage import UsageGrouping, UsageRow, UsageTotals
from meter.storage.queries import Queries


class UsageQueries(Queries):
    async def usage_totals(self, account_id: str, first: date, last: date, by: UsageGrouping) -> list[UsageRow]:
        """Sums per day or per model of the days first..last; a range read on the primary key
        (account_id, day, ...)."""
        key = {UsageGrouping.DAY: "day", UsageGrouping.MODEL: "model"}[by]
        rows = await self._rows(
            f"SELECT {key}, sum(requests) AS requests, sum(input_tokens) AS input_tokens, "
            "sum(output_tokens) AS output_tokens, sum(charged_tokens) AS charged_tokens, "
            "sum(cost_micros) AS cost_micros, sum(unbilled_tokens) AS unbilled_tokens FROM usage_daily "
            "WHERE account_id = :account_id AND day BETWEEN :first AND :last "
            f"GROUP BY {key} ORDER BY {key}",
            account_id=account_id,
            first=first,
            last=last,
        )
        return [
            UsageRow(
                day=row["day"] if by is UsageGrouping.DAY else None,
                model=row["model"] if by is UsageGrouping.MODEL else "",
                totals=UsageTotals(
                    requests=int(row["requests"]),
                    input_tokens=int(row["input_tokens"]),
                    output_tokens=int(row["output_tokens"]),
                    charged_tokens=int(row["charged_tokens"]),
                    cost_micros=int(row["cost_micros"]),
                    unbilled_tokens=int(row["unbilled_tokens"]),
                ),
            )
            for row in rows
        ]

    async def announce_warnings(self, account_id: str, period_start: datetime, levels: int) -> int | None:
        """Add `levels` (bits) to those announced in the period starting at `period_start`.
        Returns the bits announced before, or None when there is nothing new (another request, or
        replica, announced them) or that period is over."""
        row = await self._row(
            "WITH before AS (SELECT account_id, "
            "CASE WHEN warned_period_start = period_start THEN warned_levels ELSE 0 END AS levels "
            "FROM accounts WHERE account_id = :account_id AND period_start = :period_start FOR NO KEY UPDATE) "
            "UPDATE accounts AS a SET warned_levels = before.levels | CAST(:levels AS smallint), "
            "warned_period_start = :period_start FROM before WHERE a.account_id = before.account_id "
            "AND before.levels | CAST(:levels AS smallint) <> before.levels RETURNING before.levels",
            account_id=account_id,
            period_start=period_start,
            levels=levels,
        )
        return None if row is None else int(row["levels"])
