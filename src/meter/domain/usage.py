"""Where tokens went: usage summed by UTC day, model, provider and declared label keys over a
range of days, optionally only for some label values.

Each Commit adds its call to the totals of its day, model and aggregated labels (the values of
the catalog's usage label keys, pinned to its hold) in the same transaction as the charge, so the
totals are exactly the committed calls; a report reads the totals, never the calls.
"""

from __future__ import annotations

import enum
from dataclasses import astuple, dataclass, field
from datetime import date

from meter.domain.errors import InvalidField
from meter.domain.holds import Usage

# A year, leap or not: the longest range one report covers (a page of at most 366 days).
MAX_DAYS = 366


class UsageGrouping(enum.Enum):
    DAY = "day"
    MODEL = "model"
    PROVIDER = "provider"
    LABELS = "labels"  # only by the label keys asked for


@dataclass(frozen=True)
class UsageQuery:
    """What a report sums: the days first..last, by `grouping` and by the values of `label_keys`,
    of the calls whose labels have every value of `label_filter`."""

    first: date
    last: date
    grouping: UsageGrouping
    label_keys: tuple[str, ...] = ()
    label_filter: dict[str, str] = field(default_factory=dict)

    def checked(self, summed_keys: tuple[str, ...]) -> UsageQuery:
        """This query, if it names only label keys usage is summed by (`summed_keys`)."""
        for name, keys in (("group_by_labels", self.label_keys), ("label_filter", tuple(self.label_filter))):
            unknown = [key for key in keys if key not in summed_keys]
            if unknown:
                raise InvalidField(
                    name,
                    f"usage is not summed by label {unknown[0]!r}; the catalog sums it by: "
                    + (", ".join(summed_keys) or "no label"),
                )
        if len(set(self.label_keys)) != len(self.label_keys):
            raise InvalidField("group_by_labels", "names a key twice")
        if self.grouping is UsageGrouping.LABELS and not self.label_keys:
            raise InvalidField("group_by_labels", "USAGE_GROUPING_LABELS needs at least one label key")
        return self


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
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __add__(self, other: UsageTotals) -> UsageTotals:
        return UsageTotals(*(mine + theirs for mine, theirs in zip(astuple(self), astuple(other), strict=True)))


@dataclass(frozen=True)
class UsageRow:
    """One group's usage: a day's, a model's or a provider's (per the grouping), split by the
    values of the label keys asked for (`labels`: those the group's calls had)."""

    day: date | None
    model: str
    totals: UsageTotals
    provider: str = ""
    labels: dict[str, str] = field(default_factory=dict)


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
