"""Usage totals by day, model and aggregated labels (usage_daily: migrations 0006, 0031) and
announced balance warnings."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import date, datetime

from meter.domain.usage import UsageGrouping, UsageQuery, UsageRow, UsageTotals
from meter.storage.queries import NOW, Queries

_TOTALS = [field.name for field in fields(UsageTotals)]

# The rows of the days asked for are first summed per day or model and labels (folding the
# balance rows a day's totals are spread over), then each group's labels narrowed to the keys asked
# for (a key it has no value for is left out) and summed again: the narrowing runs once a group,
# not once a row.
_USAGE_TOTALS = """
SELECT g.day, g.model, n.labels, sum(g.requests) AS requests, sum(g.input_tokens) AS input_tokens,
       sum(g.output_tokens) AS output_tokens, sum(g.charged_tokens) AS charged_tokens,
       sum(g.cost_micros) AS cost_micros, sum(g.unbilled_tokens) AS unbilled_tokens,
       sum(g.cached_input_tokens) AS cached_input_tokens, sum(g.cache_write_tokens) AS cache_write_tokens,
       sum(g.reasoning_tokens) AS reasoning_tokens
FROM (
    SELECT CASE WHEN :by_day THEN u.day END AS day, CASE WHEN :by_model THEN u.model END AS model,
           u.labels, sum(u.requests) AS requests, sum(u.input_tokens) AS input_tokens,
           sum(u.output_tokens) AS output_tokens, sum(u.charged_tokens) AS charged_tokens,
           sum(u.cost_micros) AS cost_micros, sum(u.unbilled_tokens) AS unbilled_tokens,
           sum(u.cached_input_tokens) AS cached_input_tokens, sum(u.cache_write_tokens) AS cache_write_tokens,
           sum(u.reasoning_tokens) AS reasoning_tokens
    FROM usage_daily AS u
    WHERE u.account_id = :account_id AND u.day BETWEEN :first AND :last AND u.labels @> CAST(:filter AS jsonb)
    GROUP BY 1, 2, 3
) AS g
CROSS JOIN LATERAL (
    SELECT coalesce(jsonb_object_agg(k.key, g.labels -> k.key), '{}') AS labels
    FROM unnest(CAST(:keys AS text[])) AS k (key) WHERE g.labels ? k.key
) AS n
GROUP BY 1, 2, 3
"""


class UsageQueries(Queries):
    async def usage_totals(self, account_id: str, query: UsageQuery) -> list[UsageRow]:
        """Sums of the days first..last, per day or per model (a provider's rows are its models'),
        and per combination of the values of the query's label keys, of the totals whose labels
        have the filter's values: a range read on the primary key (account_id, day, ...)."""
        rows = await self._rows(
            _USAGE_TOTALS,
            account_id=account_id,
            first=query.first,
            last=query.last,
            by_day=query.grouping is UsageGrouping.DAY,
            by_model=query.grouping in (UsageGrouping.MODEL, UsageGrouping.PROVIDER),
            keys=list(query.label_keys),
            filter=json.dumps(query.label_filter),
        )
        return [
            UsageRow(
                day=row["day"],
                model=row["model"] or "",
                labels=dict(row["labels"]),
                totals=UsageTotals(**{name: int(row[name]) for name in _TOTALS}),
            )
            for row in rows
        ]

    async def fold_usage(self, accounts: int) -> date | None:
        """Fold the oldest past day's totals not yet folded, at most `accounts` accounts' rows
        (meter_fold_usage_days); the day worked on, None when every day before yesterday is."""
        row = await self._row(
            f"SELECT meter_fold_usage_days(CAST(({NOW}) AT TIME ZONE 'UTC' AS date), :accounts) AS day",
            accounts=accounts,
        )
        assert row is not None
        folded: date | None = row["day"]
        return folded

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
