"""Settling holds and drawing pools, without a database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from meter.domain.errors import RequestIdReused, ReservationCommitted, ReservationExpired, ReservationReleased
from meter.domain.holds import Hold, HoldStatus, Pricing, ReserveParams, Settlement, settle
from meter.domain.pools import BucketRow, PoolName, draw, even_split, rebalance

T0 = datetime(2026, 11, 24, tzinfo=UTC)


def hold(allowance: int, purchased: int, status: HoldStatus = HoldStatus.OPEN) -> Hold:
    return Hold(
        account_id="acme",
        reservation_id="acme/" + "0" * 32,
        request_id="r1",
        params=ReserveParams("basic", 10, 10, 600, {"a": "b"}),
        pricing=Pricing("v1", 1_000_000, 1_000_000, 0, 0),
        allowance_held=allowance,
        allowance_bucket=0,
        purchased_held=purchased,
        purchased_bucket=0,
        period_start=T0,
        status=status,
        expires_at=T0,
    )


class TestSettle:
    """A charge uses the allowance part of a hold first; the rest returns, or expires."""

    def test_partial_use_returns_the_rest(self) -> None:
        assert settle(hold(60, 40), 70, allowance_expired=False) == Settlement(60, 10, 0, 30, 0, 0)

    def test_release_returns_everything(self) -> None:
        assert settle(hold(60, 40), 0, allowance_expired=False) == Settlement(0, 0, 60, 40, 0, 0)

    def test_overage_is_what_the_hold_cannot_cover(self) -> None:
        assert settle(hold(60, 40), 150, allowance_expired=False) == Settlement(60, 40, 0, 0, 0, 50)

    def test_unused_allowance_of_an_ended_period_expires(self) -> None:
        assert settle(hold(60, 40), 20, allowance_expired=True) == Settlement(20, 0, 0, 40, 40, 0)


class TestHoldChecks:
    def test_replay_with_other_parameters_names_the_field(self) -> None:
        with pytest.raises(RequestIdReused) as refused:
            hold(1, 0).check_replay(ReserveParams("basic", 10, 10, 600, {"a": "c"}))
        assert refused.value.metadata["field"] == "labels"
        hold(1, 0).check_replay(ReserveParams("basic", 10, 10, 600, {"a": "b"}))

    @pytest.mark.parametrize(
        ("status", "error"),
        [
            (HoldStatus.COMMITTED, ReservationCommitted),
            (HoldStatus.RELEASED, ReservationReleased),
            (HoldStatus.EXPIRED, ReservationExpired),
        ],
    )
    def test_only_an_open_unexpired_hold_can_be_extended(self, status: HoldStatus, error: type[Exception]) -> None:
        with pytest.raises(error):
            hold(1, 0, status).check_extendable(T0.replace(year=2025))
        with pytest.raises(ReservationExpired):
            hold(1, 0).check_extendable(T0)


class TestDraw:
    """Amounts are drawn allowance first; what the pools lack is the shortfall."""

    @pytest.mark.parametrize(
        ("amount", "allowance", "purchased", "expected"),
        [
            (50, 100, 100, (50, 0, 0)),
            (150, 100, 100, (100, 50, 0)),
            (250, 100, 100, (100, 100, 50)),
            (0, 0, 0, (0, 0, 0)),
        ],
    )
    def test_draw(self, amount: int, allowance: int, purchased: int, expected: tuple[int, int, int]) -> None:
        taken = draw(amount, allowance, purchased)
        assert (taken.allowance, taken.purchased, taken.shortfall) == expected


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
