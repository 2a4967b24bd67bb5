"""Balance events: written by meter_emit in the transaction of the change they describe."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meter.domain.balance_events import EventType
from meter.storage.queries import Queries


class BalanceEventQueries(Queries):
    async def emit(self, account_id: str, type: EventType, data: Mapping[str, Any], now: datetime) -> int:
        row = await self._row(
            "SELECT meter_emit(:account_id, :type, CAST(:data AS jsonb), :now) AS sequence",
            account_id=account_id,
            type=type.value,
            data=json.dumps(data, sort_keys=True, default=str),
            now=now,
        )
        assert row is not None
        return int(row["sequence"])

    async def debt_events(self, account_id: str, ref: str, now: datetime) -> None:
        """The debt's facts after a change that may have moved it (meter_debt_events)."""
        await self._row("SELECT meter_debt_events(:account_id, :ref, :now)", account_id=account_id, ref=ref, now=now)
