"""What an expired hold does is the account's plan's setting, or its own (SetPlan): `release`
gives it back (a lost Commit made the call free), `charge` charges its worst case, and a late
Commit or Release then settles the difference exactly once."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.domain.holds import ExpiredHolds
from meter.service.sweeper import sweep_once
from meter.v1 import meter_pb2 as pb
from support import (
    RunningMeter,
    balance,
    expect_error,
    funded_account,
    ledger,
    new_id,
    reserve_request,
    suite_catalog,
)


async def charging_account(meter: RunningMeter, tokens: int) -> str:
    account = await funded_account(meter.stub, tokens)
    await meter.stub.SetPlan(
        pb.SetPlanRequest(account_id=account, plan_id="free", expired_holds=pb.EXPIRED_HOLDS_CHARGE)
    )
    return account


async def expired(meter: RunningMeter, account: str, **fields: Any) -> pb.ReserveResponse:
    """A hold of `fields` (basic: held = input + max output) left to expire, then swept."""
    hold = await meter.stub.Reserve(reserve_request(account, ttl_seconds=60, **fields))
    meter.clock.advance(timedelta(seconds=61))
    await sweep_once(meter.service.meter)
    return hold


async def usage_totals(engine: AsyncEngine, account: str) -> tuple[int, int, int, int]:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT coalesce(sum(requests), 0), coalesce(sum(input_tokens), 0), "
                    "coalesce(sum(output_tokens), 0), coalesce(sum(charged_tokens), 0) "
                    "FROM usage_daily WHERE account_id = :a"
                ),
                {"a": account},
            )
        ).one()
    return tuple(int(v) for v in row)  # type: ignore[return-value]


async def usage_entries(engine: AsyncEngine, account: str) -> int:
    return sum(e["amount"] for e in await ledger(engine, account) if e["kind"] == "usage")


async def test_a_charged_expiry_takes_the_worst_case_and_a_late_commit_gives_back_the_rest_once(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    account = await charging_account(meter, 10_000)
    hold = await expired(meter, account, input_tokens=100, max_output_tokens=400)
    after_expiry = await balance(meter.stub, account)
    assert (after_expiry.held, after_expiry.purchased_remaining, after_expiry.used_this_period) == (0, 9_500, 500)
    assert await usage_totals(engine, account) == (1, 100, 400, 500)
    late = await meter.stub.Commit(
        pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=100, output_tokens=150)
    )
    assert (late.charged_tokens, late.unbilled_tokens, late.late) == (250, 0, True)
    assert (late.balance.purchased_remaining, late.balance.used_this_period) == (9_750, 250)
    assert await usage_totals(engine, account) == (1, 100, 150, 250)
    assert await usage_entries(engine, account) == -250
    replay = await meter.stub.Commit(
        pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=100, output_tokens=150)
    )
    assert (replay.charged_tokens, replay.balance.purchased_remaining) == (250, 9_750)
    await expect_error(
        meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=100, output_tokens=1)),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    await expect_error(
        meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESERVATION_COMMITTED",
    )


async def test_a_late_release_gives_the_whole_charge_back_and_more_than_the_worst_case_is_taken(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    account = await charging_account(meter, 1_000)
    released = await expired(meter, account, input_tokens=100, max_output_tokens=100)
    assert (await balance(meter.stub, account)).purchased_remaining == 800
    answer = await meter.stub.Release(pb.ReleaseRequest(reservation_id=released.reservation_id))
    assert (answer.balance.purchased_remaining, answer.balance.used_this_period) == (1_000, 0)
    again = await meter.stub.Release(pb.ReleaseRequest(reservation_id=released.reservation_id))
    assert again.balance.purchased_remaining == 1_000  # released once
    await expect_error(
        meter.stub.Commit(pb.CommitRequest(reservation_id=released.reservation_id, input_tokens=1)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESERVATION_RELEASED",
    )
    assert await usage_totals(engine, account) == (0, 0, 0, 0)
    # A call that used more than it reserved: the worst case at expiry, the rest at the late
    # Commit, from what is available, and debt for what nothing pays.
    over = await expired(meter, account, input_tokens=100, max_output_tokens=100)
    late = await meter.stub.Commit(
        pb.CommitRequest(reservation_id=over.reservation_id, input_tokens=100, output_tokens=1_100)
    )
    assert (late.charged_tokens, late.unbilled_tokens) == (1_200, 200)
    assert (late.balance.purchased_remaining, late.balance.debt) == (0, 200)
    assert await usage_entries(engine, account) == -1_200
    assert await usage_totals(engine, account) == (1, 100, 1_100, 1_200)


async def test_the_allowance_given_back_after_its_period_ended_expires(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    account = new_id()
    await meter.stub.SetPlan(
        pb.SetPlanRequest(account_id=account, plan_id="starter", expired_holds=pb.EXPIRED_HOLDS_CHARGE)
    )
    hold = await meter.stub.Reserve(reserve_request(account, ttl_seconds=60, input_tokens=999, max_output_tokens=1))
    now = await balance(meter.stub, account)
    meter.clock.advance(timedelta(seconds=61))
    await sweep_once(meter.service.meter)
    meter.clock.advance(now.period_end.ToDatetime() - now.period_start.ToDatetime())  # into the next period
    late = await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=400))
    assert (late.charged_tokens, late.late) == (400, True)
    # The 600 it did not use were the ended period's allowance: they expired with it.
    assert (late.balance.allowance_remaining, late.balance.used_this_period) == (50_000, 0)
    assert [
        (e["kind"], e["pool"], e["amount"]) for e in await ledger(engine, account) if e["kind"] != "subscription_grant"
    ][-2:] == [
        ("usage", "allowance", 600),
        ("expiry", "allowance", -600),
    ]


async def test_release_stays_the_default_and_the_plan_or_the_account_decides(meters: Any) -> None:
    charging_plans = replace(
        suite_catalog(),
        plans={
            plan_id: replace(plan, expired_holds=ExpiredHolds.CHARGE) if plan_id == "pro" else plan
            for plan_id, plan in suite_catalog().plans.items()
        },
    )
    meter = await meters(catalog=charging_plans)
    released = await funded_account(meter.stub, 1_000)  # free: release, as before
    await expired(meter, released)
    assert (await balance(meter.stub, released)).purchased_remaining == 1_000
    on_pro = await funded_account(meter.stub, 1_000, plan="pro")  # the plan charges
    pro_hold = await expired(meter, on_pro, input_tokens=10, max_output_tokens=20)
    assert (await balance(meter.stub, on_pro)).used_this_period == 30
    await meter.stub.SetPlan(  # the account's own choice over its plan's
        pb.SetPlanRequest(account_id=on_pro, plan_id="pro", expired_holds=pb.EXPIRED_HOLDS_RELEASE)
    )
    kept = await meter.stub.SetPlan(pb.SetPlanRequest(account_id=on_pro, plan_id="pro"))  # unspecified: kept
    await expired(meter, on_pro, input_tokens=10, max_output_tokens=20)
    assert (await balance(meter.stub, on_pro)).used_this_period == kept.balance.used_this_period == 30
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=on_pro, plan_id="pro", expired_holds=pb.EXPIRED_HOLDS_PLAN))
    await expired(meter, on_pro, input_tokens=1, max_output_tokens=1)
    assert (await balance(meter.stub, on_pro)).used_this_period == 32
    del pro_hold


async def test_a_late_commit_across_a_period_boundary_counts_the_calls_usage(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    """Found by the model: the day's totals must follow the call's own tokens, not only its charge."""
    account = new_id()
    await meter.stub.SetPlan(
        pb.SetPlanRequest(
            account_id=account, plan_id="enterprise", monthly_allowance_tokens=3_000,
            expired_holds=pb.EXPIRED_HOLDS_CHARGE,
        )
    )  # fmt: skip
    hold = await meter.stub.Reserve(
        reserve_request(account, model="gpt-4o", ttl_seconds=60, input_tokens=740, max_output_tokens=225)
    )
    now = await balance(meter.stub, account)
    meter.clock.advance(timedelta(seconds=61))
    await sweep_once(meter.service.meter)
    assert await usage_totals(engine, account) == (1, 740, 225, 1_640)
    meter.clock.advance(now.period_end.ToDatetime() - now.period_start.ToDatetime())
    late = await meter.stub.Commit(
        pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=303, output_tokens=138)
    )
    assert late.charged_tokens == 855
    assert await usage_totals(engine, account) == (1, 303, 138, 855)


async def test_a_late_release_takes_its_own_usage_out_of_a_days_totals_it_shares(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    """Found by the model: two charged holds on one line of the day's totals, one released."""
    account = await charging_account(meter, 10_000)
    first = await meter.stub.Reserve(reserve_request(account, ttl_seconds=60, input_tokens=70, max_output_tokens=30))
    await expired(meter, account, input_tokens=10, max_output_tokens=20)  # swept with the first
    assert await usage_totals(engine, account) == (2, 80, 50, 130)
    await meter.stub.Release(pb.ReleaseRequest(reservation_id=first.reservation_id))
    assert await usage_totals(engine, account) == (1, 10, 20, 30)
