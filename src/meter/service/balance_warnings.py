"""Balance warnings: the first time in a period an account reaches 80, 90, 95 % or exhausted,
say so once (a log line and a metric), whichever request or replica saw it first.

Every balance a use case returns carries the level already announced in its period, so telling
a new crossing costs nothing on the common path; only a crossing writes (a conditional update
on the account row that exactly one transaction wins), at most four times per period.
"""

from __future__ import annotations

import logging

from meter.domain.balance import Balance, WarningLevel
from meter.domain.errors import StorageUnavailable
from meter.metrics import BALANCE_WARNINGS
from meter.service.context import Meter
from meter.service.ports import Store

log = logging.getLogger("meter.warnings")


async def announce(meter: Meter, balance: Balance) -> None:
    level = balance.warning_level
    if level.rank <= balance.announced.rank:
        return

    async def work(store: Store) -> int | None:
        return await store.announce_warning(balance.account_id, balance.period.start, level.rank)

    try:
        before = await meter.storage.transaction(work)
    except StorageUnavailable:
        # The caller's change is durable; failing its RPC now would only make it retry. The next
        # change that sees this level announces it instead.
        log.info("balance warning of %s not recorded: database unavailable", balance.account_id)
        return
    if before is None:
        return  # announced already, by a concurrent request, or the period ended meanwhile
    for crossed in level.crossed_since(WarningLevel.of_rank(before)):
        BALANCE_WARNINGS.labels(level=crossed.value).inc()
        log.warning(
            "balance warning: account %s reached %s in the period from %s (used %d of %d tokens)",
            balance.account_id,
            "exhausted" if crossed is WarningLevel.EXHAUSTED else f"{crossed.value} %",
            balance.period.start.isoformat(),
            balance.used_this_period,
            balance.used_this_period + balance.held + balance.allowance_remaining + balance.purchased_remaining,
        )
