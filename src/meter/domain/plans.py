"""What a plan's catalog entry says beyond its allowance and limits."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Rollover:
    """A plan's unused allowance rolled over at each month's end instead of expiring: at most
    `cap_tokens` of it, as a grant of its own that lives `days` from the new month's start."""

    cap_tokens: int
    days: int


class CancelledAllowance(Enum):
    """What a cancelled subscription does to the allowance left of its paid period. Either way the
    account is on the catalog's default plan from the cancellation on; the default plan's own
    allowance starts with the next period."""

    ENDS_NOW = "ends_now"  # what is left expires at once; a calendar month on the default plan starts now
    ENDS_WITH_PERIOD = "ends_with_period"  # what is left lasts until the paid period ends
    # What is left becomes a grant of its own (source rollover) that expires the plan's
    # converted_allowance_days after the cancellation (meter_convert_allowance).
    CONVERTS = "converts"
