"""A proxy's fail-open budget: while meter cannot be reached, let a call through only if the
account's admissions in this process this minute stay within `tokens_per_minute` (input plus max
output, as the call asked; the client knows no weights). Fail closed is the default (no budget):
a Reserve meter cannot answer raises. Every call let through is charged once meter answers again
(ChargeUsage, by the call's request_id, through the spool when there is one)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Counter

FAIL_OPEN_ADMISSIONS = Counter(
    "meter_client_fail_open_admissions",
    "Calls a client decided on while meter could not be reached: admitted within the fail-open budget, or refused",
    ["outcome"],
)

RESERVATION_PREFIX = "fail-open:"  # the reservation id of a call let through: never one of meter's


@dataclass(frozen=True)
class FailOpen:
    tokens_per_minute: int  # per account, in this process


@dataclass
class FailOpenBudget:
    policy: FailOpen
    clock: Callable[[], float] = time.monotonic
    _windows: dict[str, tuple[int, int]] = field(default_factory=dict)  # account: (minute, tokens admitted)

    def admit(self, account_id: str, tokens: int) -> bool:
        minute = int(self.clock() // 60)
        start, used = self._windows.get(account_id, (minute, 0))
        if start != minute:
            used = 0
        if used + tokens > self.policy.tokens_per_minute:
            FAIL_OPEN_ADMISSIONS.labels("refused").inc()
            return False
        self._windows[account_id] = (minute, used + tokens)
        FAIL_OPEN_ADMISSIONS.labels("admitted").inc()
        return True
