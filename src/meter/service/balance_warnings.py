"""Balance warnings: the first time in a period an account reaches 80, 90, 95 % or exhausted,
say so once (a log line and a metric), whichever request or replica saw it first.

Every balance a use case returns carries the levels already announced in its period, so telling
a new crossing costs nothing on the common path; only a crossing writes (a conditional update
on the account row that exactly one transaction wins), at most four times per period.
"""

from __future__ import annotations

import logging

from meter.domain.balance import Balance, WarningLevel
from meter.domain.balance_events import EventType
from meter.domain.errors import StorageUnavailable
from meter.metrics import BALANCE_WARNINGS
from meter.service.context import Meter
from meter.service.ports import Store

log = logging.getLogger("meter.warnings")


async def announce(meter: Meter, balance: Balance) -> None:
    new = balance.levels_reached - balance.announced
    if not new:
        return

    async def work(store: Store) -> list[WarningLevel]:
        """The levels this transaction tells (none when another request or replica told them
        first, or the period ended meanwhile), each as a balance event."""
        before = await store.announce_warnings(balance.account_id, balance.period.start, WarningLevel.to_bits(new))
        if before is None:
            return []
        told = sorted(new - WarningLevel.from_bits(before), key=lambda level: level.bit)
        now = await store.now()
        for level in told:
            await store.emit(
                balance.account_id,
                EventType.WARNING_CROSSED,
                {"level": level.value, "used": balance.used_this_period, "period_tokens": balance.period_tokens},
                now,
            )
        return told

    try:
        told = await meter.storage.transaction(work)
    except StorageUnavailable:
        # The caller's change is durable; failing its RPC now would only make it retry. The next
        # change that sees these levels announces them instead.
        log.info("balance warning of %s not recorded: database unavailable", balance.account_id)
        return
    for level in told:
        BALANCE_WARNINGS.labels(level=level.value).inc()
        log.warning(
            "balance warning: account %s reached %s in the period from %s (used %d of %d tokens)",
            balance.account_id,
            "exhausted" if level is WarningLevel.EXHAUSTED else f"{level.value} %",
            balance.period.start.isoformat(),
            balance.used_this_period,
            balance.period_tokens,
        )
