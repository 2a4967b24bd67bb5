"""Overage becomes debt and blocks new holds until credits pay it; expired holds come back and
a late Commit is still charged."""

from __future__ import annotations

from datetime import timedelta

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.v1 import meter_pb2 as pb
from support import (
    RunningMeter,
    balance,
    eventually,
    expect_error,
    funded_account,
    ledger,
    new_id,
    pack_purchase,
    reserve_request,
)


class TestDebt:
    async def test_overage_draws_available_then_becomes_debt_until_a_credit_pays_it(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        account = await funded_account(meter.stub, 1000)
        hold = await meter.stub.Reserve(reserve_request(account))  # holds 100
        charge = await meter.stub.Commit(
            pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=1000, output_tokens=500)
        )
        # 1500 charged: 100 from the hold, the other 900 available, 500 nobody could pay.
        assert charge.charged_tokens == 1500
        assert charge.unbilled_tokens == 500
        assert charge.balance.debt == 500
        assert charge.balance.available == 0
        assert charge.balance.purchased_remaining == 0
        assert charge.balance.warning_level == pb.WARNING_LEVEL_EXHAUSTED
        usage = [(e["pool"], e["amount"]) for e in await ledger(engine, account) if e["kind"] == "usage"]
        assert usage == [("purchased", -1000), ("debt", -500)]

        info = await expect_error(
            meter.stub.Reserve(reserve_request(account, input_tokens=1, max_output_tokens=1)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "ACCOUNT_IN_DEBT",
        )
        assert info.metadata["debt"] == "500"

        # A pack of 1000 pays the 500 owed first; the rest can be spent.
        credited = await meter.stub.CreditPurchase(pack_purchase(account))
        assert credited.balance.debt == 0
        assert credited.balance.purchased_remaining == 500
        again = await meter.stub.Reserve(reserve_request(account))
        assert again.balance.purchased_remaining == 400
        payments = [(e["pool"], e["amount"]) for e in await ledger(engine, account) if e["kind"] == "debt_payment"]
        assert payments == [("purchased", -500), ("debt", 500)]

    async def test_partial_credit_leaves_the_rest_of_the_debt(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 0)
        await meter.stub.Adjust(
            pb.AdjustRequest(account_id=account, pool=pb.POOL_PURCHASED, delta=100, reason="seed", request_id=new_id())
        )
        hold = await meter.stub.Reserve(reserve_request(account))
        await meter.stub.Commit(
            pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=2000, output_tokens=0)
        )
        assert (await balance(meter.stub, account)).debt == 1900
        paid = await meter.stub.Adjust(
            pb.AdjustRequest(
                account_id=account, pool=pb.POOL_PURCHASED, delta=1000, reason="goodwill", request_id=new_id()
            )
        )
        assert (paid.balance.debt, paid.balance.purchased_remaining) == (900, 0)
        await expect_error(
            meter.stub.Reserve(reserve_request(account)), grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_IN_DEBT"
        )

    async def test_tokens_returned_by_another_hold_pay_the_debt_first(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        account = await funded_account(meter.stub, 300)
        first = await meter.stub.Reserve(reserve_request(account))
        second = await meter.stub.Reserve(reserve_request(account))  # 100 held each, 100 available
        charge = await meter.stub.Commit(
            pb.CommitRequest(reservation_id=first.reservation_id, input_tokens=250, output_tokens=0)
        )
        assert (charge.unbilled_tokens, charge.balance.debt, charge.balance.held) == (50, 50, 100)
        released = await meter.stub.Release(pb.ReleaseRequest(reservation_id=second.reservation_id))
        # The 100 coming back pay the 50 owed; 50 are left to spend.
        assert (released.balance.debt, released.balance.purchased_remaining) == (0, 50)
        payments = [(e["pool"], e["amount"]) for e in await ledger(engine, account) if e["kind"] == "debt_payment"]
        assert payments == [("purchased", -50), ("debt", 50)]


class TestExpiry:
    async def test_sweeper_gives_expired_holds_back_and_a_late_commit_is_still_charged(
        self,
        meters,
        engine: AsyncEngine,  # type: ignore[no-untyped-def]
    ) -> None:
        meter: RunningMeter = await meters(sweep_interval_seconds=0.05)
        account = await funded_account(meter.stub, 1000)
        hold = await meter.stub.Reserve(reserve_request(account, ttl_seconds=60))
        assert (await balance(meter.stub, account)).held == 100

        meter.clock.advance(timedelta(seconds=61))
        swept = await eventually(lambda: balance(meter.stub, account), lambda b: b.held == 0)
        assert swept.purchased_remaining == 1000
        reserve_again = await meter.stub.Reserve(reserve_request(account, request_id=hold.reservation_id[-20:]))
        await meter.stub.Release(pb.ReleaseRequest(reservation_id=reserve_again.reservation_id))

        await expect_error(
            meter.stub.ExtendReservation(pb.ExtendReservationRequest(reservation_id=hold.reservation_id)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "RESERVATION_EXPIRED",
        )
        late = await meter.stub.Commit(
            pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=70, output_tokens=30)
        )
        assert late.late
        assert late.charged_tokens == 100
        assert late.unbilled_tokens == 0
        assert late.balance.purchased_remaining == 900
        # The usage is charged once, from what was available.
        assert [(e["kind"], e["amount"]) for e in await ledger(engine, account)] == [
            ("adjustment", 1000),
            ("usage", -100),
        ]

    async def test_release_after_expiry_is_a_no_op(self, meters) -> None:  # type: ignore[no-untyped-def]
        meter: RunningMeter = await meters(sweep_interval_seconds=0.05)
        account = await funded_account(meter.stub, 1000)
        hold = await meter.stub.Reserve(reserve_request(account, ttl_seconds=5))
        meter.clock.advance(timedelta(seconds=6))
        await eventually(lambda: balance(meter.stub, account), lambda b: b.held == 0)
        released = await meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id))
        assert released.balance.purchased_remaining == 1000
        # The Release is recorded: a Commit after it is refused like after any Release (found by
        # meter chaos: a Release and a late Commit of one expired hold were both acknowledged).
        await expect_error(
            meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=1)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "RESERVATION_RELEASED",
        )
        again = await meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id))
        assert again.balance.purchased_remaining == 1000

    async def test_commit_past_expiry_before_the_sweep_charges_the_hold_and_is_late(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 1000)
        hold = await meter.stub.Reserve(reserve_request(account, ttl_seconds=10))
        meter.clock.advance(timedelta(seconds=11))
        late = await meter.stub.Commit(
            pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=10, output_tokens=10)
        )
        assert late.late and late.charged_tokens == 20
        assert (late.balance.held, late.balance.purchased_remaining) == (0, 980)

    async def test_late_commit_of_zero_usage_after_the_sweep_changes_nothing(self, meters) -> None:  # type: ignore[no-untyped-def]
        meter: RunningMeter = await meters(sweep_interval_seconds=0.05)
        account = await funded_account(meter.stub, 1000)
        hold = await meter.stub.Reserve(reserve_request(account, ttl_seconds=5))
        meter.clock.advance(timedelta(seconds=6))
        await eventually(lambda: balance(meter.stub, account), lambda b: b.held == 0)
        late = await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id))
        assert (late.late, late.charged_tokens, late.balance.purchased_remaining) == (True, 0, 1000)


async def test_two_replicas_sweeping_at_once_expire_each_hold_once(meters, engine: AsyncEngine) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    replicas: list[RunningMeter] = [await meters(sweep_interval_seconds=0.02) for _ in range(2)]
    account = await funded_account(replicas[0].stub, 10_000)
    for index in range(60):
        await replicas[index % 2].stub.Reserve(reserve_request(account, ttl_seconds=5))
    for replica in replicas:
        replica.clock.advance(timedelta(seconds=6))
    swept = await eventually(lambda: balance(replicas[1].stub, account), lambda b: b.held == 0)
    assert swept.purchased_remaining == 10_000
    async with engine.connect() as connection:
        statuses = (
            await connection.execute(
                text("SELECT status, count(*) FROM holds WHERE account_id = :a GROUP BY status"), {"a": account}
            )
        ).all()
    assert [tuple(row) for row in statuses] == [("expired", 60)]
    assert [e["kind"] for e in await ledger(engine, account)] == ["adjustment"]
