"""An account's balance as callers see it, and its warning level."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from meter.domain.periods import Period


class WarningLevel(enum.Enum):
    NONE = "none"
    PERCENT_80 = "80"
    PERCENT_90 = "90"
    PERCENT_95 = "95"
    EXHAUSTED = "exhausted"

    @property
    def bit(self) -> int:
        """The level's bit in a set of levels as the database stores it (NONE is no bit)."""
        return 0 if self is WarningLevel.NONE else 1 << (_LEVELS.index(self) - 1)

    @staticmethod
    def from_bits(bits: int) -> frozenset[WarningLevel]:
        return frozenset(level for level in _LEVELS if level.bit & bits)

    @staticmethod
    def to_bits(levels: Iterable[WarningLevel]) -> int:
        return sum({level.bit for level in levels})


_LEVELS = tuple(WarningLevel)


_THRESHOLDS = ((95, WarningLevel.PERCENT_95), (90, WarningLevel.PERCENT_90), (80, WarningLevel.PERCENT_80))


def levels_reached(used: int, total: int, exhausted: bool) -> frozenset[WarningLevel]:
    """Every warning level at or past which `used` of `total` is, each on its own facts: a share
    used, or nothing left to draw (`exhausted`). The one rule of an account's warnings and a
    budget's."""
    reached = {level for percent, level in _THRESHOLDS if total and used * 100 >= percent * total}
    if exhausted:
        reached.add(WarningLevel.EXHAUSTED)
    return frozenset(reached)


@dataclass(frozen=True)
class Balance:
    account_id: str
    plan_id: str
    period: Period
    allowance_total: int
    allowance_remaining: int
    purchased_remaining: int
    allowance_held: int
    purchased_held: int
    debt: int
    used_this_period: int
    # The levels already announced (logged and counted) in this period.
    announced: frozenset[WarningLevel] = frozenset()
    # The end of what a subscription's invoices paid for; None without a subscription.
    paid_through: datetime | None = None
    # What the account's own grants (domain.grants) have left and hold.
    granted_remaining: int = 0
    granted_held: int = 0

    @property
    def held(self) -> int:
        return self.allowance_held + self.purchased_held + self.granted_held

    @property
    def remaining(self) -> int:
        """Tokens left, not counting held ones: the two pools and the grants."""
        return self.allowance_remaining + self.purchased_remaining + self.granted_remaining

    @property
    def available(self) -> int:
        """What a new hold may draw: nothing while the account is in debt."""
        return 0 if self.debt else self.remaining

    @property
    def warning_level(self) -> WarningLevel:
        """Share of the period's tokens (used + held + remaining of both pools) already used."""
        if self.available == 0:
            return WarningLevel.EXHAUSTED
        for percent, level in _THRESHOLDS:
            if self.used_this_period * 100 >= percent * self.period_tokens:
                return level
        return WarningLevel.NONE

    @property
    def period_tokens(self) -> int:
        return self.used_this_period + self.held + self.remaining

    @property
    def levels_reached(self) -> frozenset[WarningLevel]:
        """Every level the account is at or past, each on its own facts: a share of the period's
        tokens used, or nothing left to draw. An account that never had tokens in the period
        reached nothing: it did not cross anything to be where it started."""
        if not self.period_tokens and not self.debt:
            return frozenset()
        return levels_reached(self.used_this_period, self.period_tokens, self.available == 0)
