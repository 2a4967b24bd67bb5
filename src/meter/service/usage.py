"""GetUsage: an account's usage by UTC day or by model, read from the daily totals."""

from __future__ import annotations

from datetime import date

from meter.domain import ids
from meter.domain.errors import AccountNotFound
from meter.domain.usage import UsageGrouping, UsageReport, day_range
from meter.service.context import Meter
from meter.service.ports import Store


async def get_usage(
    meter: Meter, *, account_id: str, first_day: date | None, last_day: date | None, grouping: UsageGrouping
) -> UsageReport:
    ids.account_id(account_id)
    first, last = day_range(first_day, last_day)

    async def work(store: Store) -> UsageReport:
        account, _ = await store.account_state(account_id)
        if account is None:
            raise AccountNotFound(account_id)
        return UsageReport(await store.usage_totals(account_id, first, last, grouping))

    return await meter.storage.transaction(work)
