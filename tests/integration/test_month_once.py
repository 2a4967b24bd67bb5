"""A month is granted once and ended once, whatever begins it again: ending the allowance now on a
calendar account, an account back in a calendar month it left for a subscription, an invoice that
pays late for the month it is in (what was credited meanwhile does not expire mid-month).
`meter audit` finds a month granted or expired twice; each test ends with it clean and the
balance as the rule says."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine
from test_subscriptions import invoice_paid, subscription

from meter.storage.audit import audit
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, database_now, ledger, new_id


async def show(engine: AsyncEngine, account: str) -> list[str]:
    """What `meter audit` finds wrong with the account."""
    return [str(d) for d in (await audit(engine, account)).discrepancies]


async def test_expire_now_on_a_calendar_account(meter: RunningMeter, engine: AsyncEngine) -> None:
    account = new_id()
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
    again = await meter.stub.SetPlan(
        pb.SetPlanRequest(account_id=account, plan_id="starter", expire_allowance_now=True)
    )
    assert again.balance.allowance_remaining == 0  # ended now, and this month was granted already
    problems = await show(engine, account)
    assert problems == [], problems
    grants = [e["amount"] for e in await ledger(engine, account) if e["kind"] == "subscription_grant"]
    assert grants == [50_000]


async def test_adjust_allowance_in_an_unpaid_month_then_the_invoice(meter: RunningMeter, engine: AsyncEngine) -> None:
    account, ref = new_id(), new_id("sub")
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
    now = await database_now(engine)
    start, end = now - timedelta(days=3), now + timedelta(days=27)
    await meter.stub.SetPlan(subscription(account, "pro", start, end, ref))
    await meter.stub.Adjust(
        pb.AdjustRequest(
            account_id=account, pool=pb.POOL_ALLOWANCE, delta=100, reason="probe", request_id=new_id("adj")
        )
    )
    paid = await meter.stub.GrantPeriodAllowance(invoice_paid(ref, start, end))
    assert paid.balance.allowance_remaining == 500_000 + 100  # the month's grant; the 100 did not expire
    problems = await show(engine, account)
    assert problems == [], problems


async def test_calendar_then_subscribed_then_cancelled_now(meter: RunningMeter, engine: AsyncEngine) -> None:
    account, ref = new_id(), new_id("sub")
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
    now = await database_now(engine)
    start, end = now - timedelta(days=3), now + timedelta(days=27)
    await meter.stub.SetPlan(subscription(account, "starter", start, end, ref))
    await meter.stub.GrantPeriodAllowance(invoice_paid(ref, start, end))
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter", expire_allowance_now=True))
    problems = await show(engine, account)
    assert problems == [], problems
