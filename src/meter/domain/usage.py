"""Where tokens went: usage summed by UTC day or by model over a range of days.

Each Commit adds its call to its day's and model's totals in the same transaction as the charge,
so the totals are exactly the committed calls; a report reads the totals, never the calls.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date

from meter.domain.errors import InvalidField
from meter.domain.holds import Usage

# A year, leap or not: the longest range one report covers (a page of at most 366 days).
MAX_DAYS = 366


class UsageGrouping(enum.Enum):
    DAY = "day"
    MODEL = "model"


@dataclass(frozen=True)
class UsageRecord:
    """One committed call: what it used and what that cost, at its hold's pinned prices."""

    model: str
    catalog_version: str
    usage: Usage
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UsageTotals:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    charged_tokens: int = 0
    cost_micros: int = 0
    unbilled_tokens: int = 0

    def __add__(self, other: UsageTotals) -> UsageTotals:
        return UsageTotals(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.charged_tokens + other.charged_tokens,
            self.cost_micros + other.cost_micros,
            self.unbilled_tokens + other.unbilled_tokens,
        )


@dataclass(frozen=True)
class UsageRow:
    """One day's usage (grouped by day) or one model's over the range (grouped by model)."""

    day: date | None
    model: str
    totals: UsageTotals


@dataclass(frozen=True)
class UsageReport:
    rows: list[UsageRow]

    @property
    def total(self) -> UsageTotals:
        return sum((row.totals for row in self.rows), UsageTotals())


def day_range(first: date | None, last: date | None) -> tuple[date, date]:
    """Both days are included; a report covers at least one day and at most MAX_DAYS."""
    if first is None:
        raise InvalidField("from", "is required (the first UTC day, included)")
    if last is None:
        raise InvalidField("to", "is required (the last UTC day, included)")
    if last < first:
        raise InvalidField("to", "must not be before from")
    if (last - first).days + 1 > MAX_DAYS:
        raise InvalidField("to", f"a report covers at most {MAX_DAYS} days")
    return first, last
