"""Replays return the first result and change nothing (retries, restarts, duplicates)."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, funded_account, ledger, new_id, pack_purchase, reserve_request


class TestReplays:
    async def test_replayed_reserve_returns_the_same_reservation(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 1000)
        request = reserve_request(account)
        first = await meter.stub.Reserve(request)
        again = await meter.stub.Reserve(request)
        assert again.reservation_id == first.reservation_id
        assert again.held_tokens == first.held_tokens
        assert again.expires_at == first.expires_at
        assert again.balance.held == 100 and again.balance.purchased_remaining == 900

    async def test_replayed_reserve_after_commit_reports_what_happened(self, meter: RunningMeter) -> None:
        account = await funded_account(meter.stub, 1000)
        request = reserve_request(account)
        first = await meter.stub.Reserve(request)
        await meter.stub.Commit(pb.CommitRequest(reservation_id=first.reservation_id, input_tokens=5, output_tokens=5))
        again = await meter.stub.Reserve(request)
        assert again.reservation_id == first.reservation_id
        assert again.status == pb.RESERVATION_STATUS_COMMITTED
        assert again.balance.held == 0 and again.balance.purchased_remaining == 990

    async def test_replayed_commit_returns_the_first_charge(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account = await funded_account(meter.stub, 1000)
        hold = await meter.stub.Reserve(reserve_request(account))
        commit = pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=30, output_tokens=20)
        first = await meter.stub.Commit(commit)
        again = await meter.stub.Commit(commit)
        assert (again.charged_tokens, again.cost_micros, again.unbilled_tokens) == (
            first.charged_tokens,
            first.cost_micros,
            first.unbilled_tokens,
        )
        assert again.balance.purchased_remaining == 950
        assert [e["kind"] for e in await ledger(engine, account)] == ["adjustment", "usage"]

    async def test_replayed_release_changes_nothing(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account = await funded_account(meter.stub, 1000)
        hold = await meter.stub.Reserve(reserve_request(account))
        for _ in range(3):
            released = await meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id))
            assert released.balance.purchased_remaining == 1000
        assert len(await ledger(engine, account)) == 1

    async def test_concurrent_duplicates_settle_once(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        """Ten copies of the same Reserve, then ten of the same Commit, all at once."""
        account = await funded_account(meter.stub, 1000)
        request = reserve_request(account)
        holds = await asyncio.gather(*(meter.stub.Reserve(request) for _ in range(10)))
        assert len({h.reservation_id for h in holds}) == 1
        commit = pb.CommitRequest(reservation_id=holds[0].reservation_id, input_tokens=40, output_tokens=40)
        charges = await asyncio.gather(*(meter.stub.Commit(commit) for _ in range(10)))
        assert {c.charged_tokens for c in charges} == {80}
        assert (await balance(meter.stub, account)).purchased_remaining == 920
        assert [e["kind"] for e in await ledger(engine, account)] == ["adjustment", "usage"]

    async def test_concurrent_duplicate_credits_credit_once(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account = new_id()
        request = pack_purchase(account)
        results = await asyncio.gather(*(meter.stub.CreditPurchase(request) for _ in range(8)))
        assert sum(r.newly_credited for r in results) == 1
        assert (await balance(meter.stub, account)).purchased_remaining == 1000
        assert [e["kind"] for e in await ledger(engine, account)] == ["purchase"]

    async def test_replayed_adjust_and_set_plan(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account = new_id()
        plan = pb.SetPlanRequest(account_id=account, plan_id="starter")
        adjust = pb.AdjustRequest(account_id=account, pool=pb.POOL_PURCHASED, delta=7, reason="bonus", request_id="adj")
        for _ in range(3):
            await meter.stub.SetPlan(plan)
            await meter.stub.Adjust(adjust)
        snapshot = await balance(meter.stub, account)
        assert (snapshot.allowance_remaining, snapshot.purchased_remaining) == (50_000, 7)
        assert [e["kind"] for e in await ledger(engine, account)] == ["subscription_grant", "adjustment"]

    async def test_replay_through_another_server_instance(self, meters, engine: AsyncEngine) -> None:  # type: ignore[no-untyped-def]
        """Idempotency lives in Postgres: a retry that lands on another replica (or after a
        restart) gets the first result."""
        first_server, second_server = await meters(), await meters()
        account = await funded_account(first_server.stub, 1000)
        request = reserve_request(account)
        first = await first_server.stub.Reserve(request)
        again = await second_server.stub.Reserve(request)
        assert again.reservation_id == first.reservation_id
        commit = pb.CommitRequest(reservation_id=first.reservation_id, input_tokens=1, output_tokens=1)
        await first_server.stub.Commit(commit)
        await first_server.stop()
        repeated = await second_server.stub.Commit(commit)
        assert repeated.charged_tokens == 2
        assert [e["kind"] for e in await ledger(engine, account)] == ["adjustment", "usage"]
