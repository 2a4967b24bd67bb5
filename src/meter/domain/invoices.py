"""What a paid subscription invoice says: which billing period it pays for, if any, and what an
invoice of prorations bought.

Stripe invoices a plan change within a period as proration lines, each with the period
[change, period end). Those never start a period: only a line that is not a proration bills a new
one, and at a renewal whose first lines are prorations of the old period the new period is the
first line that is not. A line that bills a part of the account's current, already paid period,
or a period that ended before it, is taken for a proration too, whatever it is marked: a new
billing period is never inside the one already paid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meter.domain.periods import Period


@dataclass(frozen=True)
class InvoiceLine:
    period: Period | None  # None: no usable period (Stripe gives one-off items an empty one)
    proration: bool
    stripe_price: str
    amount_minor: int  # negative for a credit (the unused time of the old plan)


def billing_line(lines: Sequence[InvoiceLine], current: Period, current_paid: bool) -> InvoiceLine | None:
    """The line that bills the period an invoice pays for: its first that is not a proration."""
    for line in lines:
        if line.proration or line.period is None or line.period.end <= current.start:
            continue
        if current_paid and line.period != current and _inside(line.period, current):
            continue
        return line
    return None


def period_tokens(line: InvoiceLine, granted: int, allowance_of: Callable[[str], int]) -> int:
    """What an invoice for a period bought: the allowance of the plan its price is sold as, or
    what the period was granted if less (an upgrade that came first was granted with it, and its
    proration invoice bought the difference) or if its price is no plan's."""
    sold = allowance_of(line.stripe_price)
    return min(granted, sold) if sold else granted


def proration_tokens(lines: Sequence[InvoiceLine], current: Period, allowance_of: Callable[[str], int]) -> int:
    """What an invoice of prorations of the current period bought: the allowance of the plans it
    charges for, less that of the plans it credits (starter to pro bought 500 000 - 50 000)."""
    net = sum(
        allowance_of(line.stripe_price) * (1 if line.amount_minor > 0 else -1)
        for line in lines
        if line.period is not None and line.amount_minor != 0 and current.start < line.period.end <= current.end
    )
    return max(0, net)


def _inside(part: Period, whole: Period) -> bool:
    return whole.start <= part.start and part.end <= whole.end
