"""Usage by label: GetUsage groups by day, model, provider and the label keys the catalog sums
(the packaged catalog: team, agent, api_key), and filters by their values. Each report is checked
against the calls themselves, as ListLedgerEntries lists them with their labels, and the audit
checks the daily totals against the committed calls."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import grpc
from google.type import date_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.service.sweeper import sweep_once
from meter.storage.audit import audit
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, expect_error, funded_account, reserve_request, run_cli

CALLS = [  # model, labels, input, output, cached input
    ("claude-sonnet-4-5", {"team": "search", "agent": "planner", "session": "s1"}, 1_000, 200, 5_000),
    ("claude-sonnet-4-5", {"team": "search", "agent": "coder", "session": "s2"}, 2_000, 100, 0),
    ("gpt-4o", {"team": "search", "agent": "planner", "session": "s3"}, 300, 30, 1_000),
    ("claude-haiku-4-5", {"team": "ads", "session": "s4"}, 700, 70, 0),
    ("gpt-4o", {"api_key": "k1"}, 50, 5, 0),
    ("basic", {}, 10, 1, 0),
]


def _day(value: datetime) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def _request(account: str, **fields: object) -> pb.GetUsageRequest:
    today = _day(datetime.now(UTC))
    return pb.GetUsageRequest(account_id=account, to=today, **{"from": today}, **fields)  # type: ignore[arg-type]


async def _commit_calls(meter: RunningMeter) -> str:
    account = await funded_account(meter.stub, 1_000_000)
    for model, labels, input_tokens, output_tokens, cached in CALLS:
        hold = await meter.stub.Reserve(
            reserve_request(
                account, model=model, input_tokens=input_tokens + cached, max_output_tokens=output_tokens, labels=labels
            )
        )
        await meter.stub.Commit(
            pb.CommitRequest(
                reservation_id=hold.reservation_id,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_input_tokens=cached,
            )
        )
    return account


async def _ledger_sums(meter: RunningMeter, account: str, keys: list[str], where: dict[str, str]) -> Counter:
    """Charged tokens per combination of `keys`' values, from the calls in the ledger."""
    page = await meter.stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(account_id=account, kind=pb.ENTRY_KIND_USAGE, page_size=1000)
    )
    sums: Counter = Counter()
    for entry in page.entries:
        labels = dict(entry.usage.labels)
        if all(labels.get(key) == value for key, value in where.items()):
            sums[tuple((key, labels[key]) for key in keys if key in labels)] += entry.usage.charged_tokens
    return sums


async def test_usage_grouped_and_filtered_by_label_matches_the_ledger(meter: RunningMeter, engine: AsyncEngine) -> None:
    account = await _commit_calls(meter)
    for keys, where in [
        (["team"], {}),
        (["team", "agent"], {}),
        (["agent"], {"team": "search"}),
        (["api_key"], {}),
        ([], {"team": "search", "agent": "planner"}),
    ]:
        grouping = pb.USAGE_GROUPING_LABELS if keys else pb.USAGE_GROUPING_DAY
        report = await meter.stub.GetUsage(
            _request(account, group_by=grouping, group_by_labels=keys, label_filter=where)
        )
        rows = Counter({tuple(sorted(row.labels.items(), key=lambda kv: keys.index(kv[0]))): row.totals.charged_tokens
                        for row in report.rows})  # fmt: skip
        assert rows == await _ledger_sums(meter, account, keys, where), (keys, where)
        assert report.total.charged_tokens == sum(rows.values())

    by_team = await meter.stub.GetUsage(_request(account, group_by=pb.USAGE_GROUPING_LABELS, group_by_labels=["team"]))
    assert [(dict(r.labels), r.totals.requests) for r in by_team.rows] == [
        ({}, 2),  # no team: listed first
        ({"team": "ads"}, 1),
        ({"team": "search"}, 3),
    ]
    search = by_team.rows[2].totals
    assert (search.input_tokens, search.cached_input_tokens, search.output_tokens) == (3_300, 6_000, 330)
    assert (await audit(engine, account)).clean


async def test_usage_by_provider_and_by_model_split_by_label(meter: RunningMeter) -> None:
    account = await _commit_calls(meter)
    providers = await meter.stub.GetUsage(_request(account, group_by=pb.USAGE_GROUPING_PROVIDER))
    assert [(r.provider, r.totals.requests) for r in providers.rows] == [
        ("anthropic", 3),
        ("internal", 1),
        ("openai", 2),
    ]
    by_model = await meter.stub.GetUsage(
        _request(account, group_by=pb.USAGE_GROUPING_MODEL, group_by_labels=["team"], label_filter={"team": "search"})
    )
    assert [(r.model, dict(r.labels), r.totals.requests) for r in by_model.rows] == [
        ("claude-sonnet-4-5", {"team": "search"}, 2),
        ("gpt-4o", {"team": "search"}, 1),
    ]
    by_day = await meter.stub.GetUsage(_request(account, group_by=pb.USAGE_GROUPING_DAY, group_by_labels=["agent"]))
    assert [(dict(r.labels), r.totals.requests) for r in by_day.rows] == [
        ({}, 3),
        ({"agent": "coder"}, 1),
        ({"agent": "planner"}, 2),
    ]
    assert all(r.day == _day(datetime.now(UTC)) for r in by_day.rows)


async def test_labels_usage_is_not_summed_by_are_refused_by_name(meter: RunningMeter) -> None:
    account = await _commit_calls(meter)
    info = await expect_error(
        meter.stub.GetUsage(_request(account, group_by=pb.USAGE_GROUPING_DAY, group_by_labels=["session"])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )
    assert info.metadata["field"] == "group_by_labels"
    info = await expect_error(
        meter.stub.GetUsage(_request(account, group_by=pb.USAGE_GROUPING_DAY, label_filter={"session": "s1"})),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )
    assert info.metadata["field"] == "label_filter"
    await expect_error(
        meter.stub.GetUsage(_request(account, group_by=pb.USAGE_GROUPING_LABELS)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )
    catalog = await meter.stub.GetCatalog(pb.GetCatalogRequest())
    assert list(catalog.usage_label_keys) == ["team", "agent", "api_key"]


async def test_a_late_commit_of_a_charged_expiry_corrects_its_labelled_totals(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    account = await funded_account(meter.stub, 10_000)
    await meter.stub.SetPlan(
        pb.SetPlanRequest(account_id=account, plan_id="free", expired_holds=pb.EXPIRED_HOLDS_CHARGE)
    )
    hold = await meter.stub.Reserve(
        reserve_request(account, ttl_seconds=60, input_tokens=100, max_output_tokens=400, labels={"team": "ml"})
    )
    meter.clock.advance(timedelta(seconds=61))
    await sweep_once(meter.service.meter)
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=100, output_tokens=150))
    today = _day(datetime.now(UTC) + timedelta(seconds=61))
    report = await meter.stub.GetUsage(
        pb.GetUsageRequest(
            account_id=account,
            group_by=pb.USAGE_GROUPING_LABELS,
            group_by_labels=["team"],
            to=today,
            **{"from": _day(datetime.now(UTC))},
        )
    )
    assert [(dict(r.labels), r.totals.requests, r.totals.charged_tokens) for r in report.rows] == [
        ({"team": "ml"}, 1, 250)
    ]
    assert (await audit(engine, account)).clean


async def test_meter_usage_prints_label_columns(meter: RunningMeter) -> None:
    account = await _commit_calls(meter)
    code, out, err = await run_cli(
        "usage", account, "--by", "labels", "--label", "team", "--where", "agent=planner", "--target", meter.address
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].endswith("by team, only agent=planner")
    assert lines[1].split()[:3] == ["TEAM", "REQUESTS", "INPUT"]
    assert lines[2].split()[:3] == ["search", "2", "1,300"]
    code, out, err = await run_cli("usage", account, "--label", "session", "--target", meter.address)
    assert code == 1 and "session" in err
    code, out, err = await run_cli("usage", account, "--where", "team", "--target", meter.address)
    assert code == 2 and "KEY=VALUE" in err
