"""Usage records and daily totals, checked field by field against values computed by hand from the
packaged catalog; GetUsage's groupings and refusals; totals of a busy account spread over rows.

The catalog's prices are micro-USD per million tokens and its weights exact decimals:
  claude-sonnet-4-5: $3 / $15 per million, weights 1 / 5
  claude-haiku-4-5:  $1 / $5 per million,  weights 0.25 / 1.25
  basic:             free, weights 1 / 1
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, timedelta

import grpc
from google.type import date_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.v1 import meter_pb2 as pb
from support import RunningMeter, expect_error, funded_account, new_id, reserve_request


def _day(value: date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def _totals(requests: int, input_tokens: int, output_tokens: int, charged: int, cost: int, unbilled: int = 0):  # type: ignore[no-untyped-def]
    return pb.UsageTotals(
        requests=requests,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        charged_tokens=charged,
        cost_micros=cost,
        unbilled_tokens=unbilled,
    )


async def _call(meter: RunningMeter, account: str, model: str, used: tuple[int, int], **reserve: object) -> str:
    hold = await meter.stub.Reserve(
        reserve_request(account, model=model, input_tokens=used[0], max_output_tokens=max(used[1], 1), **reserve)
    )
    await meter.stub.Commit(
        pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=used[0], output_tokens=used[1])
    )
    return hold.reservation_id


async def _usage_entries(meter: RunningMeter, account: str) -> dict[str, pb.LedgerEntry]:
    page = await meter.stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(account_id=account, kind=pb.ENTRY_KIND_USAGE, page_size=1000)
    )
    return {entry.reservation_id: entry for entry in page.entries}


async def test_each_commit_records_its_call_and_adds_it_to_its_day_and_model(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 10_000_000)
    version = (await meter.stub.GetCatalog(pb.GetCatalogRequest())).version
    labels = {"session": "s-1", "agent": "planner", "provider": "anthropic"}
    first = await _call(meter, account, "claude-sonnet-4-5", (1000, 300), labels=labels)
    second = await _call(meter, account, "claude-haiku-4-5", (1001, 37))
    third = await _call(meter, account, "claude-sonnet-4-5", (10, 1))
    meter.clock.advance(timedelta(days=1))
    fourth = await _call(meter, account, "claude-sonnet-4-5", (100, 100))

    entries = await _usage_entries(meter, account)
    # charged = ceil(in * w_in + out * w_out); cost = ceil((in * p_in + out * p_out) / 1e6)
    expected = {
        first: ("claude-sonnet-4-5", 1000, 300, 1000 + 1500, 3000 + 4500, labels),
        second: ("claude-haiku-4-5", 1001, 37, 297, 1001 + 185, {}),  # 250.25 + 46.25 = 296.5 -> 297
        third: ("claude-sonnet-4-5", 10, 1, 10 + 5, 30 + 15, {}),
        fourth: ("claude-sonnet-4-5", 100, 100, 100 + 500, 300 + 1500, {}),
    }
    for reservation, (model, used_in, used_out, charged, cost, call_labels) in expected.items():
        entry = entries[reservation]
        assert entry.amount == -charged and entry.pool == pb.POOL_PURCHASED
        assert entry.usage == pb.UsageRecord(
            model=model,
            catalog_version=version,
            input_tokens=used_in,
            output_tokens=used_out,
            charged_tokens=charged,
            cost_micros=cost,
            unbilled_tokens=0,
            late=False,
            labels=call_labels,
        )

    today = entries[first].created_at.ToDatetime(tzinfo=UTC).date()
    tomorrow = entries[fourth].created_at.ToDatetime(tzinfo=UTC).date()
    assert tomorrow == today + timedelta(days=1)
    by_day = await meter.stub.GetUsage(
        pb.GetUsageRequest(
            account_id=account, group_by=pb.USAGE_GROUPING_DAY, to=_day(tomorrow), **{"from": _day(today)}
        )
    )
    assert list(by_day.rows) == [
        pb.UsageRow(day=_day(today), totals=_totals(3, 2011, 338, 2500 + 297 + 15, 7500 + 1186 + 45)),
        pb.UsageRow(day=_day(tomorrow), totals=_totals(1, 100, 100, 600, 1800)),
    ]
    assert by_day.total == _totals(4, 2111, 438, 3412, 10531)

    by_model = await meter.stub.GetUsage(
        pb.GetUsageRequest(
            account_id=account, group_by=pb.USAGE_GROUPING_MODEL, to=_day(tomorrow), **{"from": _day(today)}
        )
    )
    assert list(by_model.rows) == [
        pb.UsageRow(model="claude-haiku-4-5", totals=_totals(1, 1001, 37, 297, 1186)),
        pb.UsageRow(model="claude-sonnet-4-5", totals=_totals(3, 1110, 401, 3115, 9345)),
    ]
    assert by_model.total == by_day.total

    only_today = await meter.stub.GetUsage(
        pb.GetUsageRequest(
            account_id=account, group_by=pb.USAGE_GROUPING_MODEL, to=_day(today), **{"from": _day(today)}
        )
    )
    assert only_today.total == _totals(3, 2011, 338, 2812, 8731)
    before = await meter.stub.GetUsage(
        pb.GetUsageRequest(
            account_id=account,
            group_by=pb.USAGE_GROUPING_DAY,
            to=_day(today - timedelta(days=1)),
            **{"from": _day(today - timedelta(days=366))},
        )
    )
    assert list(before.rows) == [] and before.total == pb.UsageTotals()


async def test_unbilled_and_late_calls_are_recorded_and_counted(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 100)
    hold = await meter.stub.Reserve(reserve_request(account, input_tokens=50, max_output_tokens=50))
    over = await meter.stub.Commit(
        pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=80, output_tokens=70)
    )
    assert (over.charged_tokens, over.unbilled_tokens, over.balance.debt) == (150, 50, 50)
    await meter.stub.Adjust(
        pb.AdjustRequest(account_id=account, pool=pb.POOL_PURCHASED, delta=1050, reason="pay", request_id=new_id("adj"))
    )
    late = await meter.stub.Reserve(reserve_request(account, input_tokens=5, max_output_tokens=5, ttl_seconds=5))
    meter.clock.advance(timedelta(seconds=6))
    charged = await meter.stub.Commit(
        pb.CommitRequest(reservation_id=late.reservation_id, input_tokens=5, output_tokens=4)
    )
    assert charged.late and charged.charged_tokens == 9

    entries = await _usage_entries(meter, account)
    assert entries[hold.reservation_id].usage.unbilled_tokens == 50
    assert not entries[hold.reservation_id].usage.late
    assert entries[late.reservation_id].usage.late and entries[late.reservation_id].usage.charged_tokens == 9
    days = sorted({e.created_at.ToDatetime(tzinfo=UTC).date() for e in entries.values()})
    report = await meter.stub.GetUsage(
        pb.GetUsageRequest(
            account_id=account, group_by=pb.USAGE_GROUPING_MODEL, to=_day(days[-1]), **{"from": _day(days[0])}
        )
    )
    assert list(report.rows) == [pb.UsageRow(model="basic", totals=_totals(2, 85, 74, 159, 0, unbilled=50))]


async def test_a_busy_account_adds_to_several_rows_and_misses_no_call(meter: RunningMeter, engine: AsyncEngine) -> None:
    account = await funded_account(meter.stub, 1_000_000)

    async def calls(n: int) -> None:
        for _ in range(n):
            await _call(meter, account, "gpt-4o", (100, 10))

    await asyncio.gather(*(calls(5) for _ in range(8)))
    entries = await _usage_entries(meter, account)
    day = min(e.created_at.ToDatetime(tzinfo=UTC).date() for e in entries.values())
    report = await meter.stub.GetUsage(
        pb.GetUsageRequest(
            account_id=account, group_by=pb.USAGE_GROUPING_DAY, to=_day(day + timedelta(days=1)), **{"from": _day(day)}
        )
    )
    # gpt-4o: charged 100 + 10 * 4 = 140, cost 100 * 2.5 + 10 * 10 = 350 micro-USD a call
    assert report.total == _totals(40, 4000, 400, 5600, 14000)
    async with engine.connect() as connection:
        rows = (
            await connection.execute(text("SELECT count(*) FROM usage_daily WHERE account_id = :a"), {"a": account})
        ).scalar_one()
    assert rows > 1  # concurrent Commits spread over the account's buckets, like its balance rows


async def test_bad_ranges_and_groupings_are_refused(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 0)
    day = date(2026, 11, 1)

    def request(**fields: object) -> pb.GetUsageRequest:
        values = {"account_id": account, "group_by": pb.USAGE_GROUPING_DAY, "from": _day(day), "to": _day(day)}
        values |= fields
        return pb.GetUsageRequest(**{name: value for name, value in values.items() if value is not None})  # type: ignore[arg-type]

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    cases = {
        "from": request(**{"from": None}),
        "to": request(to=None),
        "before": request(to=_day(day - timedelta(days=1))),
        "too long": request(to=_day(day + timedelta(days=366))),
        "impossible date": request(to=date_pb2.Date(year=2026, month=2, day=30)),
        "partial date": request(**{"from": date_pb2.Date(year=2026, month=11)}),
        "grouping": request(group_by=pb.USAGE_GROUPING_UNSPECIFIED),
        "unknown grouping": request(group_by=7),
        "account id": request(account_id="no spaces allowed"),
    }
    for name, bad in cases.items():
        info = await expect_error(meter.stub.GetUsage(bad), invalid, "INVALID_FIELD")
        assert info.metadata["field"], name
    longest = await meter.stub.GetUsage(request(to=_day(day + timedelta(days=365))))
    assert list(longest.rows) == []
    await expect_error(
        meter.stub.GetUsage(request(account_id=new_id())), grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND"
    )
