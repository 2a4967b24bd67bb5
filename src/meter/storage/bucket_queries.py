"""Queries on balance buckets: one-bucket holds, all-bucket locks, and writes."""

from __future__ import annotations

from collections.abc import Sequence

from meter.domain.pools import BucketRow, PoolName
from meter.storage.queries import Queries


class BucketQueries(Queries):
    async def pool_available(self, account_id: str, pool: PoolName) -> int:
        row = await self._row(
            "SELECT coalesce(sum(available), 0) AS total FROM buckets WHERE account_id = :account_id AND pool = :pool",
            account_id=account_id,
            pool=pool.value,
        )
        assert row is not None
        return int(row["total"])

    async def hold_in_one_bucket(
        self, account_id: str, pool: PoolName, amount: int, start: int, buckets: int
    ) -> int | None:
        """Hold `amount` in one bucket that has it and is not locked by another transaction,
        scanning from `start` so that concurrent holds spread over the buckets."""
        row = await self._row(
            # A MATERIALIZED CTE runs once; a subquery in FROM may be rescanned per joined row
            # and pick (and debit) several buckets.
            "WITH pick AS MATERIALIZED (SELECT bucket FROM buckets WHERE account_id = :account_id "
            "    AND pool = :pool AND available >= :amount ORDER BY (bucket + :buckets - :start) % :buckets "
            "    LIMIT 1 FOR UPDATE SKIP LOCKED) "
            "UPDATE buckets AS b SET available = b.available - :amount, held = b.held + :amount "
            "FROM pick WHERE b.account_id = :account_id AND b.pool = :pool AND b.bucket = pick.bucket "
            "RETURNING b.bucket",
            account_id=account_id,
            pool=pool.value,
            amount=amount,
            start=start,
            buckets=buckets,
        )
        return int(row["bucket"]) if row else None

    async def lock_buckets(self, account_id: str) -> list[BucketRow]:
        rows = await self._rows(
            "SELECT pool, bucket, available, held, used FROM buckets WHERE account_id = :account_id "
            "ORDER BY pool, bucket FOR UPDATE",
            account_id=account_id,
        )
        return [BucketRow(PoolName(r["pool"]), r["bucket"], r["available"], r["held"], r["used"]) for r in rows]

    async def write_buckets(self, account_id: str, rows: Sequence[BucketRow]) -> None:
        """Write rows previously locked with lock_buckets."""
        await self._execute(
            "UPDATE buckets AS b SET available = v.available, held = v.held, used = v.used "
            "FROM unnest(CAST(:pools AS text[]), CAST(:buckets AS smallint[]), CAST(:available AS bigint[]), "
            "            CAST(:held AS bigint[]), CAST(:used AS bigint[])) AS v(pool, bucket, available, held, used) "
            "WHERE b.account_id = :account_id AND b.pool = v.pool AND b.bucket = v.bucket",
            account_id=account_id,
            pools=[r.pool.value for r in rows],
            buckets=[r.bucket for r in rows],
            available=[r.available for r in rows],
            held=[r.held for r in rows],
            used=[r.used for r in rows],
        )

    async def shift_bucket(
        self, account_id: str, pool: PoolName, bucket: int, *, available: int, held: int, used: int
    ) -> None:
        """Add deltas to one bucket (a hold part coming back, or being used)."""
        await self._execute(
            "UPDATE buckets SET available = available + :available, held = held + :held, used = used + :used "
            "WHERE account_id = :account_id AND pool = :pool AND bucket = :bucket",
            account_id=account_id,
            pool=pool.value,
            bucket=bucket,
            available=available,
            held=held,
            used=used,
        )
