"""An account's balance as callers see it, and its warning level."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from meter.domain.periods import Period


class WarningLevel(enum.Enum):
    NONE = "none"
    PERCENT_80 = "80"
    PERCENT_90 = "90"
    PERCENT_95 = "95"
    EXHAUSTED = "exhausted"

    @property
    def rank(self) -> int:
        """0-4, in the order an account's usage reaches them (what the database stores)."""
        return _LEVELS.index(self)

    @classmethod
    def of_rank(cls, rank: int) -> WarningLevel:
        return _LEVELS[rank]

    def crossed_since(self, announced: WarningLevel) -> list[WarningLevel]:
        """The levels above `announced` up to this one: each is crossed once, even all at once."""
        return list(_LEVELS[announced.rank + 1 : self.rank + 1])


_LEVELS = tuple(WarningLevel)


_THRESHOLDS = ((95, WarningLevel.PERCENT_95), (90, WarningLevel.PERCENT_90), (80, WarningLevel.PERCENT_80))


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
    # The highest level already announced (logged and counted) in this period.
    announced: WarningLevel = WarningLevel.NONE

    @property
    def held(self) -> int:
        return self.allowance_held + self.purchased_held

    @property
    def available(self) -> int:
        """What a new hold may draw: nothing while the account is in debt."""
        return 0 if self.debt else self.allowance_remaining + self.purchased_remaining

    @property
    def warning_level(self) -> WarningLevel:
        """Share of the period's tokens (used + held + remaining of both pools) already used."""
        if self.available == 0:
            return WarningLevel.EXHAUSTED
        total = self.used_this_period + self.held + self.allowance_remaining + self.purchased_remaining
        for percent, level in _THRESHOLDS:
            if self.used_this_period * 100 >= percent * total:
                return level
        return WarningLevel.NONE
