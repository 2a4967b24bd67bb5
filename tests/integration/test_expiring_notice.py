"""balance.expiring: METER_EXPIRING_NOTICE_HOURS before an account's month ends with allowance
left, the sweeper tells it once (the tokens that will expire, when, and that they are the
month's allowance); an account with nothing left is not told; the next month is told again."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.service.sweeper import sweep_once
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, balance_events, new_id, reserve_request


def expiring(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The balance.expiring events' data (without the balance each carries)."""
    return [
        {key: value for key, value in e["payload"].items() if key != "balance"}
        for e in events
        if e["type"] == "balance.expiring"
    ]


async def server_now(meter: RunningMeter) -> Any:
    """The server's clock (the database's, moved by the test clock)."""
    async with meter.service.connections.engine.connect() as connection:
        stamp = await connection.scalar(
            text("SELECT now() + make_interval(secs => :offset)"), {"offset": meter.clock.offset_seconds}
        )
    return stamp.astimezone(UTC)


async def test_the_months_allowance_left_is_told_once_before_it_expires(meters: Any, engine: AsyncEngine) -> None:
    meter: RunningMeter = await meters(expiring_notice_hours=48, sweep_interval_seconds=3600)
    left, spent = new_id(), new_id()
    for account in (left, spent):
        await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
    held = await meter.stub.Reserve(reserve_request(spent, input_tokens=25_000, max_output_tokens=25_000))
    await meter.stub.Commit(
        pb.CommitRequest(reservation_id=held.reservation_id, input_tokens=25_000, output_tokens=25_000)
    )
    month = await balance(meter.stub, left)
    end = month.period_end.ToDatetime(UTC)

    meter.clock.advance(end - timedelta(hours=49) - await server_now(meter))  # not yet within the notice
    await sweep_once(meter.service.meter)
    assert expiring(await balance_events(engine, left)) == []

    meter.clock.advance(timedelta(hours=2))  # 47 hours before the month ends
    await sweep_once(meter.service.meter)
    await sweep_once(meter.service.meter)  # once
    told = expiring(await balance_events(engine, left))
    assert told == [{"tokens": 50_000, "expires_at": end.strftime("%Y-%m-%dT%H:%M:%SZ"), "source": "allowance"}]
    assert expiring(await balance_events(engine, spent)) == []  # nothing left to expire

    meter.clock.advance(end - await server_now(meter) + timedelta(days=1))  # the next month begins
    await sweep_once(meter.service.meter)
    following = (await balance(meter.stub, left)).period_end.ToDatetime(UTC)
    meter.clock.advance(following - timedelta(hours=47) - await server_now(meter))
    await sweep_once(meter.service.meter)
    told = expiring(await balance_events(engine, left))
    assert [payload["expires_at"] for payload in told] == [
        end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        following.strftime("%Y-%m-%dT%H:%M:%SZ"),
    ]
