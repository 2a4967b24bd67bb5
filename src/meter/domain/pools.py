"""Pools and buckets: how an account's tokens are drawn and spread.

Each pool (allowance, purchased) of an account is split across N bucket rows so that concurrent
holds of one busy account lock different rows. These functions decide amounts; storage applies
them. Debt is a third ledger pool whose balance is never positive.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class PoolName(enum.StrEnum):
    ALLOWANCE = "allowance"
    PURCHASED = "purchased"
    DEBT = "debt"


def even_split(total: int, buckets: int) -> list[int]:
    """`total` spread over `buckets` rows as evenly as whole tokens allow (the first get the
    remainder), so that each bucket can serve a hold on its own for as long as possible."""
    assert total >= 0 and buckets >= 1
    base, extra = divmod(total, buckets)
    return [base + (1 if index < extra else 0) for index in range(buckets)]


@dataclass
class BucketRow:
    """One bucket of one pool, as locked for a multi-bucket change."""

    pool: PoolName
    bucket: int
    available: int
    held: int
    used: int


def rebalance(rows: list[BucketRow], pool: PoolName, total_available: int) -> None:
    """Spread a pool's available tokens evenly over its rows (held and used stay where they are)."""
    pool_rows = [row for row in rows if row.pool is pool]
    for row, amount in zip(pool_rows, even_split(total_available, len(pool_rows)), strict=True):
        row.available = amount


def pool_total(rows: list[BucketRow], pool: PoolName) -> int:
    return sum(row.available for row in rows if row.pool is pool)


def find_row(rows: list[BucketRow], pool: PoolName, bucket: int) -> BucketRow:
    for row in rows:
        if row.pool is pool and row.bucket == bucket:
            return row
    raise AssertionError(f"no bucket {pool}/{bucket} among the locked rows")
