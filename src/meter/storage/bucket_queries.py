"""Queries on balance rows (buckets) outside the hot path: credits, corrections, periods. The
rules (spreading, paying debt first) are the SQL functions of storage/sql; these call them."""

from __future__ import annotations

from datetime import datetime

from meter.domain.callers import acting_caller
from meter.domain.ledger import EntryKind
from meter.domain.pools import PoolName
from meter.storage.queries import Queries


class BucketQueries(Queries):
    async def locked_available(self, account_id: str, pool: PoolName) -> int:
        await self._row("SELECT meter_lock_buckets(:account_id)", account_id=account_id)
        row = await self._row(
            "SELECT coalesce(sum(available), 0) AS total FROM buckets WHERE account_id = :account_id AND pool = :pool",
            account_id=account_id,
            pool=pool.value,
        )
        assert row is not None
        return int(row["total"])

    async def spread(self, account_id: str, pool: PoolName, available: int) -> None:
        await self._row(
            "SELECT meter_spread(:account_id, :pool, :available)", account_id=account_id, pool=pool.value,
            available=available,
        )  # fmt: skip

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
