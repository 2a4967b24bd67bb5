"""What the clients did and what they were told: the record the checker holds the database to.

Each operation is recorded once, however many attempts it took: `acked` when the service
answered it, `refused` when it answered with a deliberate error, `unknown` when no attempt got an
answer (the operation may or may not have been applied — at most once is all that is promised).
Times are steps of one logical clock, so "acknowledged before that was sent" is exact.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Any


class Outcome(enum.Enum):
    PENDING = "pending"
    ACKED = "acked"
    REFUSED = "refused"
    UNKNOWN = "unknown"


@dataclass
class Op:
    kind: str  # reserve, commit, release, extend, balance, adjust, purchase, refund
    account: str
    key: str  # the idempotency key: request_id, reservation_id, payment_ref or charge id
    args: dict[str, Any]
    sent: int
    done: int = 0
    outcome: Outcome = Outcome.PENDING
    reason: str = ""  # the error reason (or HTTP status) of a refusal, or of the last failed attempt
    result: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0

    @property
    def acked(self) -> bool:
        return self.outcome is Outcome.ACKED


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    _clock: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def now(self) -> int:
        return next(self._clock)

    def begin(self, kind: str, account: str, key: str, **args: Any) -> Op:
        op = Op(kind, account, key, args, sent=self.now())
        self.ops.append(op)
        return op

    def ack(self, op: Op, **result: Any) -> None:
        op.outcome, op.done, op.result = Outcome.ACKED, self.now(), result

    def refuse(self, op: Op, reason: str) -> None:
        op.outcome, op.done, op.reason = Outcome.REFUSED, self.now(), reason

    def give_up(self, op: Op, reason: str) -> None:
        op.outcome, op.done, op.reason = Outcome.UNKNOWN, self.now(), reason

    def of(self, kind: str) -> list[Op]:
        return [op for op in self.ops if op.kind == kind]

    def counts(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for op in self.ops:
            row = table.setdefault(op.kind, {o.value: 0 for o in Outcome if o is not Outcome.PENDING})
            if op.outcome is not Outcome.PENDING:
                row[op.outcome.value] += 1
        return table
