"""Period boundaries: the allowance left expires and the next is granted exactly once, on the
first operation after the boundary or by the sweeper, however many requests cross it at once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, database_now, eventually, ledger, new_id, reserve_request


async def _cross_boundary(
    meter: RunningMeter, engine: AsyncEngine, account: str, extra: timedelta = timedelta(0)
) -> pb.Balance:
    before = await balance(meter.stub, account)
    now = await database_now(engine)
    meter.clock.advance(before.period_end.ToDatetime().replace(tzinfo=now.tzinfo) - now + timedelta(seconds=1) + extra)
    return before


class TestBoundary:
    async def test_many_requests_crossing_the_boundary_regrant_once(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        account = new_id()
        await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
        old_hold = await meter.stub.Reserve(reserve_request(account, input_tokens=500, max_output_tokens=500))
        spent = await meter.stub.Reserve(reserve_request(account))
        await meter.stub.Commit(
            pb.CommitRequest(reservation_id=spent.reservation_id, input_tokens=30, output_tokens=30)
        )
        before = await _cross_boundary(meter, engine, account)

        holds = await asyncio.gather(
            *(meter.stub.Reserve(reserve_request(account)) for _ in range(40)),
            *(meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account)) for _ in range(10)),
        )
        assert all(isinstance(h, pb.ReserveResponse) for h in holds[:40])
        entries = await ledger(engine, account)
        grants = [e for e in entries if e["kind"] == "subscription_grant"]
        expiries = [e for e in entries if e["kind"] == "expiry"]
        assert [g["amount"] for g in grants] == [50_000, 50_000]
        # What was left of the old allowance (not counting the open hold) expired, once.
        assert [e["amount"] for e in expiries] == [-(50_000 - 1000 - 60)]

        after = await balance(meter.stub, account)
        assert after.period_start == before.period_end
        assert after.allowance_total == 50_000
        assert after.used_this_period == 0
        assert after.allowance_remaining == 50_000 - 40 * 100
        assert after.held == 1000 + 40 * 100

        # The hold made in the old period: its used part is charged, its unused part expires
        # instead of joining the new period's allowance.
        charge = await meter.stub.Commit(
            pb.CommitRequest(reservation_id=old_hold.reservation_id, input_tokens=200, output_tokens=100)
        )
        assert charge.charged_tokens == 300
        assert charge.balance.allowance_remaining == 50_000 - 40 * 100
        assert charge.balance.held == 40 * 100
        late_entries = [
            (e["kind"], e["amount"])
            for e in await ledger(engine, account)
            if e["reservation_id"] == old_hold.reservation_id
        ]
        assert late_entries == [("usage", -300), ("expiry", -700)]

    async def test_idle_account_crossing_several_boundaries_gets_one_grant(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        account = new_id()
        await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
        before = await _cross_boundary(meter, engine, account, extra=timedelta(days=70))
        after = await balance(meter.stub, account)
        assert after.period_start.ToDatetime() > before.period_end.ToDatetime()
        assert after.period_start.ToDatetime().day == 1
        kinds = [(e["kind"], e["amount"]) for e in await ledger(engine, account)]
        assert kinds == [("subscription_grant", 50_000), ("expiry", -50_000), ("subscription_grant", 50_000)]

    async def test_sweeper_rolls_idle_accounts_over_without_any_request(self, meters, engine: AsyncEngine) -> None:  # type: ignore[no-untyped-def]
        meter: RunningMeter = await meters(sweep_interval_seconds=0.05)
        account = new_id()
        await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="pro"))
        await _cross_boundary(meter, engine, account)
        entries = await eventually(lambda: ledger(engine, account), lambda rows: len(rows) == 3)
        assert [(e["kind"], e["amount"]) for e in entries] == [
            ("subscription_grant", 500_000),
            ("expiry", -500_000),
            ("subscription_grant", 500_000),
        ]


class TestPlanChanges:
    async def test_upgrade_grants_the_difference_and_downgrade_waits_for_the_next_period(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        account = new_id()
        await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
        upgraded = await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="pro"))
        assert (upgraded.balance.allowance_total, upgraded.balance.allowance_remaining) == (500_000, 500_000)
        downgraded = await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
        assert downgraded.balance.plan_id == "starter"
        assert downgraded.balance.allowance_remaining == 500_000
        await _cross_boundary(meter, engine, account)
        assert (await balance(meter.stub, account)).allowance_total == 50_000
        grants = [e["amount"] for e in await ledger(engine, account) if e["kind"] == "subscription_grant"]
        assert grants == [50_000, 450_000, 50_000]

    async def test_an_older_event_is_ignored(self, meter: RunningMeter) -> None:
        account = new_id()
        newer = pb.SetPlanRequest(account_id=account, plan_id="business")
        newer.event_time.FromSeconds(1_790_000_100)
        older = pb.SetPlanRequest(account_id=account, plan_id="starter")
        older.event_time.FromSeconds(1_790_000_000)
        await meter.stub.SetPlan(newer)
        ignored = await meter.stub.SetPlan(older)
        assert not ignored.applied
        assert ignored.balance.plan_id == "business"
