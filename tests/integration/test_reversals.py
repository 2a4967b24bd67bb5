"""Refunds take tokens back in proportion to the cumulative refunded amount, disputes freeze the
pack and a won dispute returns it; what was already spent becomes debt."""

from __future__ import annotations

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.v1 import meter_pb2 as pb
from support import RunningMeter, expect_error, funded_account, ledger, new_id, pack_purchase, reserve_request


async def _bought(meter: RunningMeter, pack: str = "pack_100k_tokens") -> tuple[str, str, str]:
    account, ref, intent = new_id(), new_id("cs"), new_id("pi")
    fields = {"pack_100k_tokens": {"tokens": 100_000, "amount_minor": 900}}.get(pack, {})
    await meter.stub.CreditPurchase(
        pack_purchase(account, pack_id=pack, payment_ref=ref, payment_intent=intent, **fields)
    )
    return account, ref, intent


def refund(intent: str, cumulative: int) -> pb.ReverseCreditRequest:
    return pb.ReverseCreditRequest(payment_intent=intent, kind=pb.REVERSAL_KIND_REFUND, amount_minor=cumulative)


class TestRefunds:
    async def test_partial_then_full_refund_reverse_30_then_70_percent(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        account, _, intent = await _bought(meter)
        partial = await meter.stub.ReverseCredit(refund(intent, 270))  # 30 % of $9.00
        assert (partial.reversed_tokens, partial.balance.purchased_remaining) == (30_000, 70_000)
        repeated = await meter.stub.ReverseCredit(refund(intent, 270))
        assert repeated.reversed_tokens == 0
        full = await meter.stub.ReverseCredit(refund(intent, 900))
        assert (full.reversed_tokens, full.balance.purchased_remaining) == (70_000, 0)
        older = await meter.stub.ReverseCredit(refund(intent, 270))  # arrives late: changes nothing
        assert (older.reversed_tokens, older.balance.purchased_remaining) == (0, 0)
        refunds = [e["amount"] for e in await ledger(engine, account) if e["kind"] == "refund"]
        assert refunds == [-30_000, -70_000]

    async def test_refund_of_spent_tokens_becomes_debt(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account, _, intent = await _bought(meter, "pack_1000_tokens")
        hold = await meter.stub.Reserve(reserve_request(account, input_tokens=400, max_output_tokens=400))
        await meter.stub.Commit(
            pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=400, output_tokens=400)
        )
        refunded = await meter.stub.ReverseCredit(refund(intent, 100))
        assert (refunded.reversed_tokens, refunded.unbilled_tokens) == (1000, 800)
        assert (refunded.balance.debt, refunded.balance.purchased_remaining) == (800, 0)
        await expect_error(
            meter.stub.Reserve(reserve_request(account)), grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_IN_DEBT"
        )

    async def test_unknown_payment(self, meter: RunningMeter) -> None:
        await expect_error(
            meter.stub.ReverseCredit(refund("pi_unknown", 100)), grpc.StatusCode.NOT_FOUND, "PAYMENT_NOT_FOUND"
        )

    async def test_refund_by_payment_ref(self, meter: RunningMeter) -> None:
        account, ref, _ = await _bought(meter, "pack_1000_tokens")
        done = await meter.stub.ReverseCredit(
            pb.ReverseCreditRequest(account_id=account, payment_ref=ref, kind=pb.REVERSAL_KIND_REFUND, amount_minor=50)
        )
        assert (done.reversed_tokens, done.balance.purchased_remaining) == (500, 500)


class TestDisputes:
    async def test_dispute_freezes_and_a_won_dispute_restores(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account, _, intent = await _bought(meter)
        frozen = await meter.stub.ReverseCredit(
            pb.ReverseCreditRequest(payment_intent=intent, kind=pb.REVERSAL_KIND_DISPUTE)
        )
        assert (frozen.reversed_tokens, frozen.balance.purchased_remaining) == (100_000, 0)
        again = await meter.stub.ReverseCredit(
            pb.ReverseCreditRequest(payment_intent=intent, kind=pb.REVERSAL_KIND_DISPUTE)
        )
        assert again.reversed_tokens == 0
        won = await meter.stub.ReverseCredit(
            pb.ReverseCreditRequest(payment_intent=intent, kind=pb.REVERSAL_KIND_DISPUTE_WON)
        )
        assert (won.reversed_tokens, won.balance.purchased_remaining) == (-100_000, 100_000)
        kinds = [(e["kind"], e["amount"]) for e in await ledger(engine, account) if e["kind"].startswith("dispute")]
        assert kinds == [("dispute_freeze", -100_000), ("dispute_release", 100_000)]

    async def test_refund_after_a_dispute_does_not_take_twice(self, meter: RunningMeter) -> None:
        account, _, intent = await _bought(meter)
        await meter.stub.ReverseCredit(pb.ReverseCreditRequest(payment_intent=intent, kind=pb.REVERSAL_KIND_DISPUTE))
        refunded = await meter.stub.ReverseCredit(refund(intent, 900))
        assert (refunded.reversed_tokens, refunded.balance.purchased_remaining, refunded.balance.debt) == (0, 0, 0)
        won = await meter.stub.ReverseCredit(
            pb.ReverseCreditRequest(payment_intent=intent, kind=pb.REVERSAL_KIND_DISPUTE_WON)
        )
        assert won.reversed_tokens == 0

    async def test_spent_tokens_frozen_by_a_dispute_become_debt(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 0)
        intent = new_id("pi")
        await meter.stub.CreditPurchase(pack_purchase(account, payment_intent=intent))
        hold = await meter.stub.Reserve(reserve_request(account, input_tokens=300, max_output_tokens=300))
        await meter.stub.Commit(
            pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=300, output_tokens=300)
        )
        frozen = await meter.stub.ReverseCredit(
            pb.ReverseCreditRequest(payment_intent=intent, kind=pb.REVERSAL_KIND_DISPUTE)
        )
        assert (frozen.unbilled_tokens, frozen.balance.debt) == (600, 600)
        won = await meter.stub.ReverseCredit(
            pb.ReverseCreditRequest(payment_intent=intent, kind=pb.REVERSAL_KIND_DISPUTE_WON)
        )
        assert (won.balance.debt, won.balance.purchased_remaining) == (0, 400)
