"""Refunds and disputes of a pack against a reference model, through the real webhook endpoint.

Hypothesis drives a pack purchase (part of it spent) through any sequence of refunds (cumulative
amounts, stale ones included), dispute events carrying any status, and redeliveries, and after
every step holds the real service to what the model says the end state is. The model states the
rules declaratively, not step by step as the service applies them:

- refunded: the largest cumulative amount seen, as a share of the pack (all of it when refunded
  in full);
- the dispute: the first closing status seen (won or lost) is final; before one, open if any
  event said so;
- taken back: the refunded share, plus the rest of the pack while the dispute is open or lost;
- what the account had left pays for what is taken back; the rest is debt.

The machine runs in a thread with its own event loop, so that this test's loop keeps serving the
real server it calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from server_machine import ServerMachine
from stripe_events import deliver, disputed, paid_checkout, refunded

from meter.v1 import meter_pb2 as pb
from support import RunningMeter, new_id

T = TypeVar("T")
TOKENS, PRICE = 100_000, 900  # pack_100k_tokens
OPEN = ("warning_needs_response", "warning_under_review", "needs_response", "under_review")
WON = ("won", "warning_closed")
LOST = ("lost",)


class Model:
    def __init__(self, spent: int) -> None:
        self.spent = spent
        self.refunded_minor = 0
        self.dispute: str | None = None  # "open", "won", "lost"

    def refund(self, cumulative: int) -> None:
        self.refunded_minor = max(self.refunded_minor, cumulative)

    def dispute_status(self, status: str) -> None:
        if self.dispute in ("won", "lost"):
            return
        self.dispute = "won" if status in WON else "lost" if status in LOST else "open"

    @property
    def taken(self) -> int:
        refunded = TOKENS if self.refunded_minor >= PRICE else TOKENS * self.refunded_minor // PRICE
        frozen = TOKENS - refunded if self.dispute in ("open", "lost") else 0
        return refunded + frozen

    @property
    def expected(self) -> tuple[int, int]:
        """(purchased_remaining, debt)."""
        left = TOKENS - self.spent
        return max(0, left - self.taken), max(0, self.taken - left)


def machine(grpc_address: str, webhook_url: str) -> type[RuleBasedStateMachine]:
    class PackReversals(ServerMachine):
        address = grpc_address

        def __init__(self) -> None:
            super().__init__()
            self.sent: list[bytes] = []
            self.model = Model(0)
            self.account = self.intent = self.dispute_id = ""

        def deliver(self, payload: bytes, record: Callable[[], None]) -> None:
            status, body = self.run(deliver(webhook_url, payload))
            assert (status, body["status"]) in ((200, "applied"), (200, "duplicate")), body
            self.sent.append(payload)
            record()

        @initialize(spent=st.integers(0, TOKENS - 1))
        def buy_and_spend(self, spent: int) -> None:
            self.account, self.intent, self.dispute_id = new_id(), new_id("pi"), new_id("dp")
            purchase = paid_checkout(self.account, pack="pack_100k_tokens", tokens=str(TOKENS), amount=PRICE,
                                     intent=self.intent)  # fmt: skip
            self.deliver(purchase, lambda: None)
            if spent:
                self.run(self._spend(spent))
            self.model = Model(spent)

        async def _spend(self, tokens: int) -> None:
            hold = await self.stub.Reserve(
                pb.ReserveRequest(
                    account_id=self.account,
                    request_id=new_id("r"),
                    model="basic",
                    input_tokens=tokens,
                    max_output_tokens=1,
                )  # fmt: skip
            )
            await self.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=tokens))

        @rule(cumulative=st.integers(1, PRICE))
        def refund(self, cumulative: int) -> None:
            self.deliver(refunded(self.intent, cumulative, PRICE), lambda: self.model.refund(cumulative))

        @rule(status=st.sampled_from(OPEN + WON + LOST))
        def dispute_event(self, status: str) -> None:
            kind = "charge.dispute.closed" if status in WON + LOST else "charge.dispute.updated"
            payload = disputed(self.intent, status, dispute=self.dispute_id, kind=kind)
            self.deliver(payload, lambda: self.model.dispute_status(status))

        @rule(data=st.data())
        def redeliver(self, data: st.DataObject) -> None:
            if self.sent:
                self.deliver(data.draw(st.sampled_from(self.sent)), lambda: None)  # changes nothing

        @invariant()
        def balance_is_the_models(self) -> None:
            if not self.account:
                return
            answer = self.run(self.stub.GetBalance(pb.GetBalanceRequest(account_id=self.account)))
            actual = (answer.balance.purchased_remaining, answer.balance.debt)
            assert actual == self.model.expected, (actual, self.model.__dict__)

    return PackReversals


async def test_refunds_and_disputes_in_any_order_end_where_the_model_says(meter: RunningMeter) -> None:
    state_machine: Any = machine(meter.address, meter.webhook_url)
    options = settings(max_examples=25, stateful_step_count=12, deadline=None, suppress_health_check=list(HealthCheck))
    await asyncio.to_thread(run_state_machine_as_test, state_machine, settings=options)
