"""A refused payment against a reference model: events that would credit it after all (the terms
as sold), refunds (Stripe's cumulative amount, in any order and redelivered) and support's
resolutions, in any order, through the real webhook adapter and server.

The model states the rules, not the service's steps:

- a refused payment is credited by a later event with the terms as sold only while nothing was
  done about it: no refund of any of it, not resolved; once credited, it is an ordinary purchase
  (its refunds take tokens back) and no longer listed;
- a refund of a refused payment is applied to the refusal (never left waiting): what was
  refunded is Stripe's highest cumulative amount, and all of it makes the refusal refunded;
- resolving is refused once it was refunded whole (ALREADY_EXISTS) or credited (NOT_FOUND); a
  second resolution keeps the first;
- a payment is credited or given back, never both: the balance only ever holds its tokens less
  what refunds of the credited purchase took back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from server_machine import ServerMachine
from stripe_events import deliver, paid_checkout, refunded

from meter.v1 import meter_pb2 as pb
from support import RunningMeter, error_info, new_id

pytestmark = pytest.mark.long  # run by `make test-long`

T = TypeVar("T")
TOKENS, PRICE = 1000, 100  # pack_1000_tokens as the suite's catalog sells it


@dataclass
class Model:
    credited: bool = False
    state: int = pb.REFUSED_PURCHASE_STATE_OPEN
    refunded_minor: int = 0  # of the refusal (before any credit)
    purchase_refunded_minor: int = 0  # of the purchase, once credited

    @property
    def tokens(self) -> int:
        if not self.credited:
            return 0
        return TOKENS - TOKENS * self.purchase_refunded_minor // PRICE

    @property
    def creditable(self) -> bool:
        return self.state == pb.REFUSED_PURCHASE_STATE_OPEN and self.refunded_minor == 0


def machine(grpc_address: str, webhook_url: str) -> type[RuleBasedStateMachine]:
    class RefusedPayment(ServerMachine):
        address = grpc_address

        def __init__(self) -> None:
            super().__init__()
            self.model = Model()
            self.sent: list[tuple[bytes, str]] = []  # each event sent, and what it was answered first
            self.account = self.session = self.intent = ""

        def deliver(self, payload: bytes) -> str:
            status, body = self.run(deliver(webhook_url, payload))
            assert status == 200, body
            self.sent.append((payload, str(body["status"])))
            return str(body["status"])

        @initialize()
        def refused(self) -> None:
            self.account, self.session, self.intent = new_id(), f"cs_test_{new_id()}", new_id("pi")
            mismatched = paid_checkout(self.account, tokens="999", session=self.session, intent=self.intent)
            assert self.deliver(mismatched) == "rejected"

        @rule()
        def an_event_with_the_terms_as_sold(self) -> None:
            status = self.deliver(paid_checkout(self.account, session=self.session, intent=self.intent))
            if self.model.credited:
                assert status == "applied"  # credited before: nothing changes
            elif self.model.creditable:
                assert status == "applied"
                self.model.credited = True
            else:
                assert status == "rejected"

        @rule(cumulative=st.sampled_from([25, 50, 75, 100]))
        def a_refund(self, cumulative: int) -> None:
            assert self.deliver(refunded(self.intent, cumulative, PRICE)) == "applied"
            model = self.model
            if model.credited:
                model.purchase_refunded_minor = max(model.purchase_refunded_minor, cumulative)
                return
            model.refunded_minor = max(model.refunded_minor, cumulative)
            if model.refunded_minor >= PRICE:
                model.state = pb.REFUSED_PURCHASE_STATE_REFUNDED

        @rule()
        def support_resolves_it(self) -> None:
            request = pb.ResolveRefusedPurchaseRequest(account_id=self.account, payment_ref=self.session, note="done")
            try:
                answer = self.run(self.stub.ResolveRefusedPurchase(request))
            except grpc.aio.AioRpcError as error:
                reason = error_info(error).reason
                if self.model.credited:
                    assert reason == "REFUSED_PURCHASE_NOT_FOUND", reason
                else:
                    assert self.model.state == pb.REFUSED_PURCHASE_STATE_REFUNDED, reason
                    assert reason == "REFUSED_PURCHASE_SETTLED", reason
                return
            assert not self.model.credited and self.model.state != pb.REFUSED_PURCHASE_STATE_REFUNDED
            self.model.state = pb.REFUSED_PURCHASE_STATE_RESOLVED
            assert answer.purchase.state == pb.REFUSED_PURCHASE_STATE_RESOLVED

        @rule(data=st.data())
        def a_redelivery(self, data: st.DataObject) -> None:
            payload, first = data.draw(st.sampled_from(self.sent))
            status, body = self.run(deliver(webhook_url, payload))
            # The same event changes nothing again: applied once, a rejection stays one.
            assert (status, body["status"]) == (200, "duplicate" if first == "applied" else first), body

        @invariant()
        def as_the_model_says(self) -> None:
            if not self.account:
                return
            listing = pb.ListRefusedPurchasesRequest(account_id=self.account)
            listed = self.run(self.stub.ListRefusedPurchases(listing)).purchases
            if self.model.credited:
                assert not listed
            else:
                [refusal] = listed
                assert (refusal.state, refusal.refunded_minor) == (self.model.state, self.model.refunded_minor)
            answer = self.run(self.stub.GetBalance(pb.GetBalanceRequest(account_id=self.account)))
            assert (answer.balance.purchased_remaining, answer.balance.debt) == (self.model.tokens, 0)

    return RefusedPayment


async def test_a_refused_payment_is_credited_or_given_back_never_both(meter: RunningMeter) -> None:
    state_machine: Any = machine(meter.address, meter.webhook_url)
    options = settings(max_examples=30, stateful_step_count=12, deadline=None, suppress_health_check=list(HealthCheck))
    await asyncio.to_thread(run_state_machine_as_test, state_machine, settings=options)
