"""Holds (two-phase transfers): open -> committed (possibly partially, possibly with overage) or
released or expired, exactly once (decided by the hot-path functions, storage/sql).

A hold records what it took from each pool and from which bucket, so that settling it gives
back the right amounts to the right places; its pricing is pinned at Reserve so a catalog change
never alters it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from meter.domain import ids
from meter.domain.amounts import MAX_CALL_TOKENS, require_tokens
from meter.domain.budgets import MAX_LABEL_LENGTH
from meter.domain.errors import InvalidField

MAX_LABELS = 32  # a call's labels (Reserve's, ChargeUsage's)
# No meter lets a hold live longer (the upper bound of METER_MAX_TTL_SECONDS): a TTL above it is
# refused whatever the server's setting, so a client can refuse it without asking.
LONGEST_TTL_SECONDS = 86_400


class ExpiredHolds(enum.StrEnum):
    """What a hold still open at its expiry does: a plan's setting, which an account may override
    (SetPlan). `release` gives it back (a Commit that never came made the call free); `charge`
    charges its worst case (a lost Commit costs the customer the most the call could have cost),
    and a late Commit or Release settles the difference."""

    RELEASE = "release"
    CHARGE = "charge"


class HoldStatus(enum.StrEnum):
    OPEN = "open"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Pricing:
    """A model's prices and weights from one catalog version (weights in millionths, prices in
    micro-USD per million tokens), for each class of tokens, and the labels the call's usage is
    aggregated by (those of the keys that catalog version aggregates): all pinned to a hold."""

    catalog_version: str
    input_weight: int
    output_weight: int
    input_price: int
    output_price: int
    cached_input_weight: int
    cache_write_weight: int
    reasoning_weight: int
    cached_input_price: int
    cache_write_price: int
    reasoning_price: int
    usage_labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CallTokens:
    """What a call used, by the classes providers bill apart; each token is in exactly one class.
    input: input read neither from nor into a cache; cached_input: input read from a cache;
    cache_write: input written to a cache; output: output other than reasoning; reasoning: the
    model's reasoning (thinking) tokens, when the provider counts them apart."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class CallUsage:
    """A call charged without a hold (ChargeUsage): what it used, and its labels."""

    model: str
    tokens: CallTokens
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReserveParams:
    """What a Reserve asked for; a replay of its request_id must ask for the same."""

    model: str
    input_tokens: int
    max_output_tokens: int
    ttl_seconds: int
    labels: dict[str, str] = field(default_factory=dict)


def reserve_params(
    *,
    account_id: str,
    request_id: str,
    model: str,
    input_tokens: int,
    max_output_tokens: int,
    ttl_seconds: int,
    labels: Mapping[str, str],
    default_ttl_seconds: int,
    max_ttl_seconds: int,
) -> ReserveParams:
    """A Reserve's request as meter accepts it, or the InvalidField meter refuses it with (the
    model is the catalog's to check). Meter's Reserve and the client's fail-open path (which must
    refuse locally what meter would refuse) both call this."""
    ids.account_id(account_id)
    ids.idempotency_key(request_id, "request_id")
    return ReserveParams(
        model=model,
        input_tokens=require_tokens("input_tokens", input_tokens, minimum=0, maximum=MAX_CALL_TOKENS),
        max_output_tokens=require_tokens("max_output_tokens", max_output_tokens, minimum=1, maximum=MAX_CALL_TOKENS),
        ttl_seconds=hold_ttl_seconds(ttl_seconds, default_seconds=default_ttl_seconds, max_seconds=max_ttl_seconds),
        labels=call_labels(labels),
    )


def hold_ttl_seconds(value: int, *, default_seconds: int, max_seconds: int, field: str = "ttl_seconds") -> int:
    """A hold's lifetime as asked (Reserve, ExtendReservation): 0 for the default."""
    if value == 0:
        return default_seconds
    if value < 0 or value > max_seconds:
        raise InvalidField(field, f"must be between 1 and {max_seconds} seconds (0: default)")
    return value


def call_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """A call's labels (Reserve's and ChargeUsage's): bounded in number and length."""
    if len(labels) > MAX_LABELS:
        raise InvalidField("labels", f"at most {MAX_LABELS} labels")
    for key, value in labels.items():
        if not key or len(key) > MAX_LABEL_LENGTH or len(value) > MAX_LABEL_LENGTH:
            raise InvalidField("labels", f"keys (non-empty) and values are at most {MAX_LABEL_LENGTH} characters")
    return dict(labels)


@dataclass(frozen=True)
class Usage:
    """The outcome of a committed hold."""

    tokens: CallTokens
    charged_tokens: int
    cost_micros: int
    unbilled_tokens: int
    late: bool


@dataclass(frozen=True)
class Hold:
    account_id: str
    reservation_id: str
    request_id: str
    params: ReserveParams
    pricing: Pricing
    held: int  # the worst case it holds, over its parts (the pools it drew on, in order)
    period_start: datetime
    status: HoldStatus
    expires_at: datetime
    usage: Usage | None = None

    @property
    def held_tokens(self) -> int:
        return self.held
