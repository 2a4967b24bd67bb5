"""Subscriptions: the plan and period follow Stripe; a period's allowance is granted when its
invoice is paid, exactly once; a cancelled subscription ends the allowance at once."""

from __future__ import annotations

from datetime import datetime, timedelta

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.domain.periods import add_months
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, database_now, expect_error, ledger, new_id


def subscription(
    account: str, plan: str, start: datetime, end: datetime, ref: str, **fields: object
) -> pb.SetPlanRequest:
    request = pb.SetPlanRequest(account_id=account, plan_id=plan, subscription_ref=ref, **fields)  # type: ignore[arg-type]
    request.period_start.FromDatetime(start)
    request.period_end.FromDatetime(end)
    return request


def invoice_paid(ref: str, start: datetime, end: datetime) -> pb.GrantPeriodAllowanceRequest:
    request = pb.GrantPeriodAllowanceRequest(subscription_ref=ref, invoice_ref=new_id("in"))
    request.period_start.FromDatetime(start)
    request.period_end.FromDatetime(end)
    return request


class TestPaidPeriods:
    async def test_allowance_waits_for_the_invoice_and_is_granted_once(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        account, ref = new_id(), new_id("sub")
        now = await database_now(engine)
        start, end = now - timedelta(days=3), now + timedelta(days=27)
        created = await meter.stub.SetPlan(subscription(account, "pro", start, end, ref))
        # The allowance month is counted from the billing period's start; nothing is paid yet.
        assert created.balance.period_start.ToDatetime() == start.replace(tzinfo=None)
        assert created.balance.period_end.ToDatetime() == add_months(start, 1).replace(tzinfo=None)
        assert created.balance.allowance_total == 0 and not created.balance.HasField("paid_through")

        first = await meter.stub.GrantPeriodAllowance(invoice_paid(ref, start, end))
        again = await meter.stub.GrantPeriodAllowance(invoice_paid(ref, start, end))
        assert (first.granted, again.granted) == (True, False)
        assert again.balance.allowance_remaining == 500_000
        assert again.balance.paid_through.ToDatetime() == end.replace(tzinfo=None)
        grants = [e["amount"] for e in await ledger(engine, account) if e["kind"] == "subscription_grant"]
        assert grants == [500_000]

    async def test_an_unpaid_next_period_gets_no_allowance_until_its_invoice(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        account, ref = new_id(), new_id("sub")
        now = await database_now(engine)
        start, end = now - timedelta(days=29), now + timedelta(days=1)
        await meter.stub.SetPlan(subscription(account, "starter", start, end, ref))
        await meter.stub.GrantPeriodAllowance(invoice_paid(ref, start, end))
        meter.clock.advance(timedelta(days=2))
        lapsed = await balance(meter.stub, account)
        assert (lapsed.allowance_remaining, lapsed.allowance_total) == (0, 0)
        renewed = await meter.stub.GrantPeriodAllowance(invoice_paid(ref, end, end + timedelta(days=30)))
        assert renewed.granted
        assert renewed.balance.allowance_remaining == 50_000
        assert renewed.balance.period_start.ToDatetime() == end.replace(tzinfo=None)
        kinds = [(e["kind"], e["amount"]) for e in await ledger(engine, account)]
        assert kinds == [("subscription_grant", 50_000), ("expiry", -50_000), ("subscription_grant", 50_000)]

    async def test_an_old_invoice_changes_nothing(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account, ref = new_id(), new_id("sub")
        now = await database_now(engine)
        start, end = now - timedelta(days=3), now + timedelta(days=27)
        await meter.stub.SetPlan(subscription(account, "pro", start, end, ref))
        old = await meter.stub.GrantPeriodAllowance(
            invoice_paid(ref, start - timedelta(days=60), start - timedelta(days=30))
        )
        assert not old.granted and old.balance.allowance_total == 0

    async def test_unknown_subscription(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        now = await database_now(engine)
        info = await expect_error(
            meter.stub.GrantPeriodAllowance(invoice_paid("sub_nobody", now, now + timedelta(days=30))),
            grpc.StatusCode.NOT_FOUND,
            "SUBSCRIPTION_NOT_FOUND",
        )
        assert info.metadata["subscriptionRef"] == "sub_nobody"


class TestPlanChanges:
    async def test_upgrade_grants_the_difference_once_the_period_is_paid(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        account, ref = new_id(), new_id("sub")
        now = await database_now(engine)
        start, end = now - timedelta(days=3), now + timedelta(days=27)
        await meter.stub.SetPlan(subscription(account, "starter", start, end, ref))
        await meter.stub.GrantPeriodAllowance(invoice_paid(ref, start, end))
        upgraded = await meter.stub.SetPlan(subscription(account, "pro", start, end, ref))
        assert (upgraded.balance.allowance_total, upgraded.balance.allowance_remaining) == (500_000, 500_000)
        downgraded = await meter.stub.SetPlan(subscription(account, "starter", start, end, ref))
        assert downgraded.balance.allowance_remaining == 500_000
        meter.clock.advance(end - now + timedelta(seconds=1))  # the renewal is invoiced when it begins
        renewed = await meter.stub.GrantPeriodAllowance(invoice_paid(ref, end, end + timedelta(days=30)))
        assert renewed.balance.allowance_total == 50_000

    async def test_cancellation_ends_the_allowance_now(self, meter: RunningMeter, engine: AsyncEngine) -> None:
        account, ref = new_id(), new_id("sub")
        now = await database_now(engine)
        start, end = now - timedelta(days=3), now + timedelta(days=27)
        await meter.stub.SetPlan(subscription(account, "pro", start, end, ref))
        await meter.stub.GrantPeriodAllowance(invoice_paid(ref, start, end))
        cancelled = await meter.stub.SetPlan(
            pb.SetPlanRequest(account_id=account, plan_id="free", expire_allowance_now=True)
        )
        assert cancelled.balance.plan_id == "free"
        assert (cancelled.balance.allowance_remaining, cancelled.balance.allowance_total) == (0, 0)
        assert [(e["kind"], e["amount"]) for e in await ledger(engine, account)][-1] == ("expiry", -500_000)


class TestAnInvoiceIsPaidOnce:
    async def test_an_invoice_grants_one_account_whatever_account_its_events_name(
        self, meter: RunningMeter, engine: AsyncEngine
    ) -> None:
        """A subscription's metadata edited from one account to another leaves both on it: one
        invoice's events naming each grant the period's allowance to the first only."""
        first, second, ref = new_id(), new_id(), new_id("sub")
        now = await database_now(engine)
        start, end = now - timedelta(days=3), now + timedelta(days=27)
        for account in (first, second):
            await meter.stub.SetPlan(subscription(account, "pro", start, end, ref))
        paid = invoice_paid(ref, start, end)
        assert (await meter.stub.GrantPeriodAllowance(_naming(paid, first))).granted
        info = await expect_error(
            meter.stub.GrantPeriodAllowance(_naming(paid, second)),
            grpc.StatusCode.ALREADY_EXISTS,
            "IDEMPOTENCY_KEY_REUSED",
        )
        assert info.metadata["field"] == "account_id"
        assert (await balance(meter.stub, second)).allowance_remaining == 0
        assert [e["kind"] for e in await ledger(engine, second)] == []


def _naming(request: pb.GrantPeriodAllowanceRequest, account: str) -> pb.GrantPeriodAllowanceRequest:
    named = pb.GrantPeriodAllowanceRequest()
    named.CopyFrom(request)
    named.account_id = account
    return named
