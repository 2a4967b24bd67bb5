"""Balance events: written by meter_emit in the transaction of the change they describe."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from meter.domain.balance_events import BalanceEvent, EventPosition, EventType
from meter.storage.balance_rows import balance_from_row
from meter.storage.queries import Queries

_AFTER_POSITION = """
SELECT account_id, sequence, event_id, type, occurred_at, payload, CAST(transaction_id AS text) AS transaction_id
FROM balance_events
WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
  AND (CAST(:xid AS xid8) IS NULL
       OR (transaction_id, account_id, sequence) > (CAST(:xid AS xid8), CAST(:account_id AS text), :sequence))
ORDER BY transaction_id, account_id, sequence
LIMIT :limit
"""


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

    async def events_after(self, account_id: str, after_sequence: int, limit: int) -> list[BalanceEvent]:
        rows = await self._rows(
            "SELECT sequence, event_id, type, occurred_at, payload, CAST(transaction_id AS text) AS transaction_id "
            "FROM balance_events WHERE account_id = :account_id AND sequence > :after ORDER BY sequence LIMIT :limit",
            account_id=account_id,
            after=after_sequence,
            limit=limit,
        )
        return [event_from_row(account_id, row) for row in rows]

    async def events_after_position(self, after: EventPosition | None, limit: int) -> list[BalanceEvent]:
        """Every account's events after `after`, of transactions older than every one still
        running: no event can commit later with a position below the last one read."""
        rows = await self._rows(_AFTER_POSITION, xid=after.transaction if after else None,
                                account_id=after.account_id if after else "", sequence=after.sequence if after else 0,
                                limit=limit)  # fmt: skip
        return [event_from_row(row["account_id"], row) for row in rows]


def event_from_row(account_id: str, row: Mapping[str, Any]) -> BalanceEvent:
    data = dict(row["payload"])
    balance = data.pop("balance")
    for field in ("period_start", "period_end", "paid_through"):
        balance[field] = datetime.fromisoformat(balance[field]) if balance.get(field) else None
    return BalanceEvent(
        account_id=account_id,
        sequence=row["sequence"],
        event_id=str(row["event_id"]),
        type=row["type"],
        occurred_at=row["occurred_at"],
        data=data,
        balance=balance_from_row(account_id, balance),
        position=EventPosition(int(row["transaction_id"]), account_id, row["sequence"]),
    )
