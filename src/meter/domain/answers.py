"""What the database decided for a Reserve, Commit, Release, ExtendReservation or expiry.

Every rule of money on the hot path is decided in one place, the PL/pgSQL functions of
storage/sql (meter_reserve, meter_commit, meter_release, meter_extend, meter_expire), under the
rows' locks in one statement. They answer with an outcome and the facts that go with it; the use
cases turn refusals into errors and nothing else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from meter.domain.balance import Balance
from meter.domain.budgets import BudgetRefusal, BudgetState
from meter.domain.holds import HoldStatus


class Outcome(enum.StrEnum):
    PLACED = "placed"
    REPLAYED = "replayed"  # the same request (or Commit) again: the first answer
    REQUEST_REUSED = "request_reused"  # a Reserve's request_id again, with other parameters
    USAGE_REUSED = "usage_reused"  # a Commit again, with other usage
    ACCOUNT_NOT_FOUND = "account_not_found"
    NOT_FOUND = "not_found"  # no such reservation
    IN_DEBT = "in_debt"
    RATE_LIMITED = "rate_limited"
    BUDGET_EXCEEDED = "budget_exceeded"  # a budget the call's labels count against has not got its worst case
    INSUFFICIENT = "insufficient"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"
    CHARGED = "charged"  # at expiry, its worst case (the account's expired holds are charged)
    EXTENDED = "extended"
    SKIPPED = "skipped"  # expiry of a hold settled meanwhile, or not yet due


@dataclass(frozen=True)
class RateRefusal:
    limit: str  # as callers see it: requestsPerMinute, tokensPerMinute, concurrentHolds
    value: int
    retry_after: float | None  # None: the Reserve can never pass


@dataclass(frozen=True)
class Reserved:
    """A Reserve's answer. With PLACED or REPLAYED, the hold's facts; with REQUEST_REUSED, the
    parameter that differs; with RATE_LIMITED, the refusal; with BUDGET_EXCEEDED, the budget's;
    with INSUFFICIENT, `required`."""

    outcome: Outcome
    balance: Balance | None
    reservation_id: str = ""
    held_tokens: int = 0
    expires_at: datetime | None = None
    catalog_version: str = ""
    status: HoldStatus = HoldStatus.OPEN
    reused_field: str = ""
    refusal: RateRefusal | None = None
    required: int = 0
    across: bool = False  # no single row had the tokens: taken from all the account's rows
    budget_refusal: BudgetRefusal | None = None


@dataclass(frozen=True)
class Charged:
    """A Commit's answer. With COMMITTED or REPLAYED, the charge; with USAGE_REUSED, the field."""

    outcome: Outcome
    balance: Balance | None
    charged_tokens: int = 0
    cost_micros: int = 0
    unbilled_tokens: int = 0
    late: bool = False
    reused_field: str = ""
    reservation_id: str = ""  # ChargeUsage's: the call's (the first's, on a replay)
    budgets: tuple[BudgetState, ...] = ()  # a new charge's budgets, where they stand after it


@dataclass(frozen=True)
class Released:
    outcome: Outcome
    balance: Balance | None


@dataclass(frozen=True)
class Extended:
    outcome: Outcome
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Expiry:
    outcome: Outcome  # EXPIRED, CHARGED or SKIPPED
