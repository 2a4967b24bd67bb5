"""A proxy's fail-open budget: while meter cannot be reached, let a call through only if the
account's admissions in this process this minute stay within `tokens_per_minute` (input plus max
output, as the call asked; the client knows no weights). Fail closed is the default (no budget):
a Reserve meter cannot answer raises. Every call let through is charged once meter answers again
(ChargeUsage, by the call's request_id, through the spool when there is one).

A call is let through only if meter would have taken it: `let_through_tokens` refuses first what
meter's Reserve refuses (the domain's `reserve_params`, the rule meter applies; and a model the
catalog does not list, when the client has read the catalog), so that nothing the budget counts
is negative, zero or absurd.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client import Counter

from meter.domain.errors import MeterError, UnknownModel
from meter.domain.holds import LONGEST_TTL_SECONDS, reserve_params

FAIL_OPEN_ADMISSIONS = Counter(
    "meter_client_fail_open_admissions",
    "Calls a client decided on while meter could not be reached: admitted within the fail-open budget, "
    "refused beyond it, or invalid (refused as meter would refuse them)",
    ["outcome"],
)

RESERVATION_PREFIX = "fail-open:"  # the reservation id of a call let through: never one of meter's


@dataclass(frozen=True)
class FailOpen:
    tokens_per_minute: int  # per account, in this process

    def __post_init__(self) -> None:
        if self.tokens_per_minute < 1:
            raise ValueError(f"tokens_per_minute must be at least 1, got {self.tokens_per_minute}")


def let_through_tokens(
    *,
    account_id: str,
    request_id: str,
    model: str,
    input_tokens: int,
    max_output_tokens: int,
    ttl_seconds: int,
    labels: Mapping[str, str],
    models: frozenset[str] | None,
) -> int:
    """The tokens a Reserve meter could not answer asks for (its worst case, at least 1), or the
    MeterError meter would have refused it with. `models`: the catalog's, when the client has read
    it. The TTL is checked against the longest any meter allows (this one's setting is unknown
    here; a call let through holds nothing, so its TTL changes nothing else)."""
    try:
        params = reserve_params(
            account_id=account_id,
            request_id=request_id,
            model=model,
            input_tokens=input_tokens,
            max_output_tokens=max_output_tokens,
            ttl_seconds=ttl_seconds,
            labels=labels,
            default_ttl_seconds=LONGEST_TTL_SECONDS,
            max_ttl_seconds=LONGEST_TTL_SECONDS,
        )
        if models is not None and model not in models:
            raise UnknownModel(model[:200])
    except MeterError:
        FAIL_OPEN_ADMISSIONS.labels("invalid").inc()
        raise
    return params.input_tokens + params.max_output_tokens


@dataclass
class FailOpenBudget:
    """Tokens admitted per account in the current minute of `clock`. Invariant: each account's
    count stays within 0..tokens_per_minute, whatever it is asked to admit (a count below 1 is
    never admitted; Python integers do not overflow)."""

    policy: FailOpen
    clock: Callable[[], float] = time.monotonic
    _minute: int = 0
    _admitted: dict[str, int] = field(default_factory=dict)  # account: tokens admitted this minute

    def admit(self, account_id: str, tokens: int) -> bool:
        minute = int(self.clock() // 60)
        if minute > self._minute:  # a new minute: last minute's counts are forgotten, all at once
            self._minute, self._admitted = minute, {}
        used = self._admitted.get(account_id, 0)
        if not 1 <= tokens <= self.policy.tokens_per_minute - used:
            FAIL_OPEN_ADMISSIONS.labels("refused").inc()
            return False
        self._admitted[account_id] = used + tokens
        assert 0 < self._admitted[account_id] <= self.policy.tokens_per_minute
        FAIL_OPEN_ADMISSIONS.labels("admitted").inc()
        return True
