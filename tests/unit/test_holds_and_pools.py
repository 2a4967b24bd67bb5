"""Spreading a pool over its rows, without a database."""

from __future__ import annotations

from meter.domain.pools import BucketRow, PoolName, even_split, rebalance


class TestSpreading:
    def test_even_split_gives_the_remainder_to_the_first_buckets(self) -> None:
        assert even_split(10, 4) == [3, 3, 2, 2]
        assert even_split(3, 4) == [1, 1, 1, 0]
        assert even_split(7, 1) == [7]
        assert sum(even_split(1_000_003, 16)) == 1_000_003

    def test_rebalance_touches_one_pool_and_keeps_held(self) -> None:
        rows = [BucketRow(PoolName.ALLOWANCE, b, 0, 5, 0) for b in range(2)] + [
            BucketRow(PoolName.PURCHASED, b, 9, 1, 0) for b in range(2)
        ]
        rebalance(rows, PoolName.ALLOWANCE, 11)
        assert [(r.available, r.held) for r in rows] == [(6, 5), (5, 5), (9, 1), (9, 1)]
