"""Usage totals by day and model (migration 0006's usage_daily) and announced balance warnings."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from meter.domain.holds import Hold, Usage
from meter.storage.queries import Queries

# The level already announced in the account's current period (0 when it was in an earlier one).
ANNOUNCED_LEVELS = "CASE WHEN a.warned_period_start = a.period_start THEN a.warned_levels ELSE 0 END"


class UsageQueries(Queries):
    async def add_usage(self, hold: Hold, usage: Usage, now: datetime) -> None:
        """One more call on the commit's UTC day, on the totals row of the balance row the Commit
        holds locked (the hold's bucket): no lock a concurrent Commit could wait on."""
        await self._execute(
            "INSERT INTO usage_daily AS u (account_id, day, model, pool, bucket, requests, input_tokens, "
            "output_tokens, charged_tokens, cost_micros, unbilled_tokens) VALUES (:account_id, "
            "CAST((CAST(:now AS timestamptz) AT TIME ZONE 'UTC') AS date), :model, :pool, :bucket, 1, :input, "
            ":output, :charged, :cost, :unbilled) "
            "ON CONFLICT (account_id, day, model, pool, bucket) DO UPDATE SET requests = u.requests + 1, "
            "input_tokens = u.input_tokens + excluded.input_tokens, "
            "output_tokens = u.output_tokens + excluded.output_tokens, "
            "charged_tokens = u.charged_tokens + excluded.charged_tokens, "
            "cost_micros = u.cost_micros + excluded.cost_micros, "
            "unbilled_tokens = u.unbilled_tokens + excluded.unbilled_tokens",
            account_id=hold.account_id,
            now=now,
            model=hold.params.model,
            pool="allowance" if hold.allowance_held else "purchased",
            bucket=hold.allowance_bucket if hold.allowance_held else hold.purchased_bucket,
            input=usage.input_tokens,
            output=usage.output_tokens,
            charged=usage.charged_tokens,
            cost=usage.cost_micros,
            unbilled=usage.unbilled_tokens,
        )

    async def usage_totals(self, account_id: str, first: date, last: date, by: str) -> list[Mapping[str, Any]]:
        """Sums per day (by="day") or per model (by="model") of the days first..last; a range
        read on the primary key (account_id, day, ...)."""
        key = {"day": "day", "model": "model"}[by]
        return await self._rows(
            f"SELECT {key}, sum(requests) AS requests, sum(input_tokens) AS input_tokens, "
            "sum(output_tokens) AS output_tokens, sum(charged_tokens) AS charged_tokens, "
            "sum(cost_micros) AS cost_micros, sum(unbilled_tokens) AS unbilled_tokens FROM usage_daily "
            "WHERE account_id = :account_id AND day BETWEEN :first AND :last "
            f"GROUP BY {key} ORDER BY {key}",
            account_id=account_id,
            first=first,
            last=last,
        )

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
