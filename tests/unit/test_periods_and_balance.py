"""Periods and warning levels."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from meter.domain.balance import Balance, WarningLevel
from meter.domain.periods import Period, absurd, add_months, calendar_month, moves_to


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class TestPeriods:
    def test_calendar_month_contains_now(self) -> None:
        assert calendar_month(utc(2026, 11, 24, 13, 5)) == Period(utc(2026, 11, 1), utc(2026, 12, 1))
        assert calendar_month(utc(2026, 12, 31, 23, 59)) == Period(utc(2026, 12, 1), utc(2027, 1, 1))

    def test_add_months_clamps_to_the_last_day(self) -> None:
        assert add_months(utc(2026, 1, 31), 1) == utc(2026, 2, 28)
        assert add_months(utc(2028, 1, 31), 1) == utc(2028, 2, 29)
        assert add_months(utc(2026, 11, 15), 14) == utc(2028, 1, 15)

    @pytest.mark.parametrize(
        ("period", "problem"),
        [
            (Period(utc(2026, 11, 20), utc(2026, 11, 20, 0, 0, 13)), "at least an hour"),
            (Period(utc(2026, 11, 1), utc(2027, 11, 3)), "at most 366 days"),
            (Period(utc(2026, 11, 21), utc(2026, 12, 21)), "start in the future"),
            (Period(utc(2001, 1, 1), utc(2001, 2, 1)), "over a year ago"),
        ],
    )
    def test_absurd_periods(self, period: Period, problem: str) -> None:
        reason = absurd(period, utc(2026, 11, 20, 12))
        assert reason is not None and problem in reason

    def test_plausible_periods(self) -> None:
        now = utc(2026, 11, 20, 12)
        assert absurd(Period(utc(2026, 11, 2), utc(2026, 12, 2)), now) is None
        assert absurd(Period(utc(2026, 11, 20, 12, 3), utc(2026, 12, 20)), now) is None  # Stripe's clock ahead
        assert absurd(Period(utc(2026, 10, 2), utc(2026, 11, 2)), now) is None  # a late delivery

    def test_an_older_ended_period_never_takes_an_account_back(self) -> None:
        current, now = Period(utc(2026, 11, 2), utc(2026, 12, 2)), utc(2026, 11, 20)
        assert not moves_to(current, Period(utc(2026, 10, 2), utc(2026, 11, 2)), now)
        assert not moves_to(current, current, now)
        assert moves_to(current, Period(utc(2026, 11, 10), utc(2026, 12, 10)), now)  # a new anchor
        assert moves_to(current, Period(utc(2026, 11, 1), utc(2026, 12, 1)), now)  # contains now: Stripe's truth

    def test_a_period_has_ended_at_its_end(self) -> None:
        period = Period(utc(2026, 11, 1), utc(2026, 12, 1))
        assert not period.has_ended(utc(2026, 11, 30, 23, 59))
        assert period.has_ended(utc(2026, 12, 1))


def balance(used: int, remaining: int, held: int = 0, debt: int = 0) -> Balance:
    return Balance("acme", "pro", Period(utc(2026, 11, 1), utc(2026, 12, 1)), 1000, remaining, 0, held, 0, debt, used)


class TestWarningLevels:
    """Levels are the share used of the period's tokens (used + held + remaining)."""

    @pytest.mark.parametrize(
        ("used", "remaining", "level"),
        [
            (799, 201, WarningLevel.NONE),
            (800, 200, WarningLevel.PERCENT_80),
            (899, 101, WarningLevel.PERCENT_80),
            (900, 100, WarningLevel.PERCENT_90),
            (950, 50, WarningLevel.PERCENT_95),
            (999, 1, WarningLevel.PERCENT_95),
            (1000, 0, WarningLevel.EXHAUSTED),
        ],
    )
    def test_thresholds(self, used: int, remaining: int, level: WarningLevel) -> None:
        assert balance(used, remaining).warning_level is level

    def test_an_account_in_debt_has_nothing_available(self) -> None:
        owing = balance(1000, 300, debt=5)
        assert owing.available == 0
        assert owing.warning_level is WarningLevel.EXHAUSTED


class TestLevelsReached:
    """What an announcement tells: each level on its own facts, and nothing for an account that
    never had tokens in the period."""

    def test_a_jump_reaches_every_level_below(self) -> None:
        assert balance(960, 40).levels_reached == {
            WarningLevel.PERCENT_80,
            WarningLevel.PERCENT_90,
            WarningLevel.PERCENT_95,
        }

    def test_all_held_is_exhausted_without_any_share_used(self) -> None:
        assert balance(0, 0, held=1000).levels_reached == {WarningLevel.EXHAUSTED}

    def test_an_empty_account_reached_nothing_but_one_in_debt_is_exhausted(self) -> None:
        assert balance(0, 0).levels_reached == frozenset()
        assert balance(0, 0, debt=7).levels_reached == {WarningLevel.EXHAUSTED}

    def test_levels_round_trip_through_their_bits(self) -> None:
        levels = {WarningLevel.PERCENT_90, WarningLevel.EXHAUSTED}
        assert WarningLevel.to_bits(levels) == 0b1010
        assert WarningLevel.from_bits(0b1010) == levels
        assert WarningLevel.to_bits([WarningLevel.NONE]) == 0
