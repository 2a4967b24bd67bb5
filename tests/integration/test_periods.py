"""Period boundaries: the allowance left expires and the next is granted exactly once, on the
first operation after the boundary or by the sweeper, however many requests cross it at once."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_events import deliver, subscription_event

from meter.domain.periods import add_months
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, database_now, eventually, expect_error, ledger, new_id, reserve_request


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


def _period_plan(account: str, plan: str, start: datetime, end: datetime, **fields: object) -> pb.SetPlanRequest:
    request = pb.SetPlanRequest(account_id=account, plan_id=plan, **fields)  # type: ignore[arg-type]
    request.period_start.FromDatetime(start)
    request.period_end.FromDatetime(end)
    return request


class TestPeriodLengths:
    """The allowance is monthly whatever the billing period's length: months counted from the
    period SetPlan gives; absurd periods are refused with a reason."""

    async def test_a_weekly_billing_period_grants_a_months_allowance_once_a_month(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        account, now = new_id(), await database_now(engine)
        start, end = now - timedelta(days=6), now + timedelta(days=1)
        await meter.stub.SetPlan(_period_plan(account, "starter", start, end))
        month_end = add_months(start, 1)
        meter.clock.advance(timedelta(days=2))  # the week ended; the month goes on
        after = await balance(meter.stub, account)
        assert after.period_start.ToDatetime() == start.replace(tzinfo=None)
        assert after.period_end.ToDatetime() == month_end.replace(tzinfo=None)
        assert [(e["kind"], e["amount"]) for e in await ledger(engine, account)] == [("subscription_grant", 50_000)]
        meter.clock.advance(month_end - now - timedelta(days=2) + timedelta(minutes=1))  # the next month
        after = await balance(meter.stub, account)
        assert after.period_start.ToDatetime() == month_end.replace(tzinfo=None)
        kinds = [(e["kind"], e["amount"]) for e in await ledger(engine, account)]
        assert kinds == [("subscription_grant", 50_000), ("expiry", -50_000), ("subscription_grant", 50_000)]

    @pytest.mark.parametrize(
        ("offsets", "problem"),
        [
            ((timedelta(0), timedelta(seconds=13)), "at least an hour"),
            ((timedelta(days=2), timedelta(days=32)), "cannot start in the future"),
            ((-timedelta(days=800), -timedelta(days=770)), "over a year ago"),
        ],
    )
    async def test_absurd_periods_are_refused_and_change_nothing(
        self, meter: RunningMeter, engine: AsyncEngine, offsets: tuple[timedelta, timedelta], problem: str
    ) -> None:
        account, now = new_id(), await database_now(engine)
        await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
        before = await balance(meter.stub, account)
        request = _period_plan(account, "pro", now + offsets[0], now + offsets[1])
        info = await expect_error(meter.stub.SetPlan(request), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
        assert problem in info.metadata["problem"]
        assert await balance(meter.stub, account) == before

    async def test_a_thirteen_second_subscription_period_is_rejected_through_the_webhook(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        account, now = new_id(), int(time.time())

        created = subscription_event("created", account, "starter", created=now, start=now, end=now + 13)
        status, body = await deliver(meter.webhook_url, created)
        assert (status, body["status"]) == (200, "rejected")
        assert "at least an hour" in body["reason"]

    async def test_an_older_period_never_takes_an_account_back_nor_expires_its_allowance(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        """A newer event carrying an older period (in 1970 it expired the whole allowance)."""
        account, now = new_id(), await database_now(engine)
        start, end = now - timedelta(days=3), now + timedelta(days=27)
        await meter.stub.SetPlan(_period_plan(account, "starter", start, end))
        older = _period_plan(account, "pro", start - timedelta(days=31), start)
        older.event_time.FromDatetime(now)
        changed = await meter.stub.SetPlan(older)
        assert changed.applied and changed.balance.plan_id == "pro"
        assert changed.balance.period_start.ToDatetime() == start.replace(tzinfo=None)
        assert changed.balance.allowance_remaining == 500_000  # the upgrade, nothing expired
        assert [e["kind"] for e in await ledger(engine, account)] == ["subscription_grant", "subscription_grant"]
