"""GetUsage: an account's usage by UTC day, model, provider and declared label keys, read from
the daily totals."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date

from meter.domain import ids
from meter.domain.errors import AccountNotFound
from meter.domain.usage import UsageGrouping, UsageQuery, UsageReport, UsageRow, UsageTotals, day_range
from meter.service.context import Meter
from meter.service.ports import Store

UNKNOWN_PROVIDER = "unknown"  # the provider of a model the catalog no longer lists


async def get_usage(
    meter: Meter,
    *,
    account_id: str,
    first_day: date | None,
    last_day: date | None,
    grouping: UsageGrouping,
    label_keys: Sequence[str] = (),
    label_filter: Mapping[str, str] | None = None,
) -> UsageReport:
    ids.account_id(account_id)
    first, last = day_range(first_day, last_day)
    query = UsageQuery(first, last, grouping, tuple(label_keys), dict(label_filter or {}))
    query.checked(meter.catalog.usage_label_keys)

    async def work(store: Store) -> list[UsageRow]:
        account, _ = await store.account_state(account_id)
        if account is None:
            raise AccountNotFound(account_id)
        return await store.usage_totals(account_id, query)

    rows = await meter.storage.transaction(work)
    if query.grouping is UsageGrouping.PROVIDER:
        rows = _by_provider(meter, rows)
    return UsageReport(sorted(rows, key=lambda row: _order(row, query.label_keys)))


def _by_provider(meter: Meter, rows: list[UsageRow]) -> list[UsageRow]:
    """Models' rows summed per provider (the catalog says whose a model is)."""
    totals: dict[tuple[str, tuple[tuple[str, str], ...]], UsageTotals] = defaultdict(UsageTotals)
    for row in rows:
        model = meter.catalog.models.get(row.model)
        provider = model.provider if model is not None else UNKNOWN_PROVIDER
        key = (provider, tuple(sorted(row.labels.items())))
        totals[key] += row.totals
    return [
        UsageRow(day=None, model="", provider=provider, labels=dict(labels), totals=total)
        for (provider, labels), total in totals.items()
    ]


def _order(row: UsageRow, label_keys: tuple[str, ...]) -> tuple[object, ...]:
    """Oldest day first, then by model or provider, then by label values in the keys' order (no
    value first)."""
    return (
        row.day or "",
        row.model,
        row.provider,
        *((key in row.labels, row.labels.get(key, "")) for key in label_keys),
    )
