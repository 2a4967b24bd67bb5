"""Calls of the SQL functions that move tokens outside the hot path: credits and adjustments. The
rules (spreading, paying debt first, what a correction may take) are theirs (storage/sql)."""

from __future__ import annotations

from datetime import datetime

from meter.domain.callers import acting_caller
from meter.domain.ledger import EntryKind
from meter.domain.pools import PoolName
from meter.storage.queries import Queries


class BucketQueries(Queries):
    async def adjust(
        self, account_id: str, pool: PoolName, delta: int, now: datetime, *, ref: str, note: str
    ) -> int | None:
        row = await self._row(
            "SELECT * FROM meter_adjust(:account_id, :pool, :delta, :ref, :note, :now, :caller)",
            account_id=account_id,
            pool=pool.value,
            delta=delta,
            ref=ref,
            note=note,
            now=now,
            caller=acting_caller(),
        )
        assert row is not None
        return None if row["outcome"] == "adjusted" else int(row["available"])

    async def credit(
        self,
        account_id: str,
        kind: EntryKind,
        pool: PoolName,
        amount: int,
        now: datetime,
        *,
        ref: str,
        note: str | None,
    ) -> int:
        row = await self._row(
            "SELECT meter_credit(:account_id, :kind, :pool, :amount, :ref, :note, :now, :caller) AS paid",
            account_id=account_id,
            kind=kind.value,
            pool=pool.value,
            amount=amount,
            ref=ref,
            note=note,
            now=now,
            caller=acting_caller(),
        )
        assert row is not None
        return int(row["paid"])
