"""Past days' usage totals are folded by the sweeper: a day's rows of an account, model and summed
labels, spread over balance rows as Commits wrote them, become one row with the same sums, and a
late Commit of a hold charged at expiry that day still corrects them exactly (`meter audit`, run
after every test, checks the totals against the calls)."""

from __future__ import annotations

from datetime import UTC, timedelta

from google.type import date_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.service.sweeper import sweep_once
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, database_now, funded_account, reserve_request

LABELS = {"team": "search"}


async def _rows(engine: AsyncEngine, account: str) -> int:
    async with engine.connect() as connection:
        query = text("SELECT count(*) FROM usage_daily WHERE account_id = :a")
        return int((await connection.execute(query, {"a": account})).scalar_one())


async def test_a_past_day_is_folded_into_one_row_per_model_and_labels(meter: RunningMeter, engine: AsyncEngine) -> None:
    account = await funded_account(meter.stub, 1_000_000)
    await meter.stub.SetPlan(
        pb.SetPlanRequest(account_id=account, plan_id="free", expired_holds=pb.EXPIRED_HOLDS_CHARGE)
    )
    day = (await database_now(engine)).astimezone(UTC).date()
    for _ in range(24):  # spread over the account's 16 balance rows
        hold = await meter.stub.Reserve(reserve_request(account, labels=LABELS))
        await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=30, output_tokens=20))
    expiring = await meter.stub.Reserve(reserve_request(account, labels=LABELS, ttl_seconds=60))
    meter.clock.advance(timedelta(seconds=61))
    await sweep_once(meter.service.meter)  # charged its worst case (100) on this day
    assert await _rows(engine, account) > 1

    async with engine.begin() as connection:  # fold from the oldest day of usage (other tests' too)
        await connection.execute(text("UPDATE usage_folding SET folded_through = NULL"))
    meter.clock.advance(timedelta(days=2))
    for _ in range(400):
        if (await sweep_once(meter.service.meter)).usage_day_folded is None:
            break
    assert await _rows(engine, account) == 1

    report = pb.GetUsageRequest(
        account_id=account,
        group_by=pb.USAGE_GROUPING_LABELS,
        group_by_labels=["team"],
        to=date_pb2.Date(year=day.year, month=day.month, day=day.day),
        **{"from": date_pb2.Date(year=day.year, month=day.month, day=day.day)},
    )
    [row] = (await meter.stub.GetUsage(report)).rows
    assert (row.totals.requests, row.totals.charged_tokens) == (25, 24 * 50 + 100)
    # The late Commit settles the expiry's worst case on the folded row.
    await meter.stub.Commit(pb.CommitRequest(reservation_id=expiring.reservation_id, input_tokens=5, output_tokens=5))
    [row] = (await meter.stub.GetUsage(report)).rows
    assert (row.totals.requests, row.totals.charged_tokens, row.totals.input_tokens) == (25, 24 * 50 + 10, 24 * 30 + 5)
