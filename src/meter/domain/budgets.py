"""Budgets under an account: a cap on what the calls labelled with one label value (team=search,
api_key=k1) may use each period of the budget's window (the account's allowance month, or a UTC
day, week or calendar month), in charged tokens or in provider cost.

Reserve holds a call's worst case against every budget its labels match, with the balance, and
refuses it (BUDGET_EXCEEDED, the account's balance untouched) when one has not got it; Commit
counts what the call used. Like a balance, a budget's count is spread over rows, so that busy
calls do not queue on one (meter_hold_budgets, meter_settle_budgets). A budget starts again when
its window's period does (meter_budget_period).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from meter.domain.amounts import INT64_MAX
from meter.domain.balance import WarningLevel, levels_reached
from meter.domain.errors import InvalidField

MAX_LABEL_LENGTH = 256  # a label's key or value: a call's (Reserve, ChargeUsage) and a budget's


class BudgetUnit(enum.StrEnum):
    TOKENS = "tokens"  # charged (balance) tokens, as Commit charges them
    COST_MICROS = "cost_micros"  # provider cost in micro-USD, at the catalog prices pinned to each call


class BudgetWindow(enum.StrEnum):
    """The period a budget counts in (meter_budget_period says where each begins and ends)."""

    ACCOUNT_MONTH = "account_month"  # the account's allowance month
    DAY = "day"  # UTC
    WEEK = "week"  # from Monday 00:00 UTC
    CALENDAR_MONTH = "calendar_month"  # UTC


@dataclass(frozen=True)
class BudgetKey:
    """Which calls a budget counts: those with this value of this label."""

    label_key: str
    label_value: str

    def checked(self) -> BudgetKey:
        if not self.label_key or len(self.label_key) > MAX_LABEL_LENGTH:
            raise InvalidField("label_key", f"is required, at most {MAX_LABEL_LENGTH} characters")
        if not self.label_value or len(self.label_value) > MAX_LABEL_LENGTH:
            raise InvalidField("label_value", f"is required, at most {MAX_LABEL_LENGTH} characters")
        return self


def budget_cap(cap: int) -> int:
    if not 0 <= cap <= INT64_MAX:
        raise InvalidField("cap", "must be between 0 and 2^63 - 1")
    return cap


@dataclass(frozen=True)
class Budget:
    """A budget and what its period has used and holds (`remaining` is below zero when usage
    beyond its holds took it past its cap)."""

    key: BudgetKey
    unit: BudgetUnit
    cap: int
    used: int
    held: int
    period_start: datetime
    period_end: datetime
    budget_id: int = 0
    window: BudgetWindow = BudgetWindow.ACCOUNT_MONTH

    @property
    def remaining(self) -> int:
        return self.cap - self.used - self.held

    @property
    def levels_reached(self) -> frozenset[WarningLevel]:
        return budget_levels(self.cap, self.used, self.held)


@dataclass(frozen=True)
class BudgetState:
    """Where a budget stands after a Commit counted against it (meter_budget_states): enough to
    see whether a warning level is crossed that its period has not told."""

    budget_id: int
    cap: int
    used: int
    held: int
    announced: frozenset[WarningLevel]

    @property
    def untold(self) -> frozenset[WarningLevel]:
        return budget_levels(self.cap, self.used, self.held) - self.announced


def budget_levels(cap: int, used: int, held: int) -> frozenset[WarningLevel]:
    """The warning levels a budget's period is at or past: a share of its cap used, or nothing
    left to admit. A budget of nothing (cap 0) reached nothing: it never had anything to cross."""
    if not cap:
        return frozenset()
    return levels_reached(used, cap, cap - used - held <= 0)


@dataclass(frozen=True)
class BudgetRefusal:
    """The budget a Reserve did not fit, and by how much."""

    key: BudgetKey
    unit: BudgetUnit
    cap: int
    remaining: int
    required: int
