"""Budgets under an account: caps on what one label value's calls may use each period, in charged
tokens or provider cost, set through SetBudget and enforced by Reserve (BUDGET_EXCEEDED, the
account's balance untouched), counted by every way a hold ends, and started again each period.
`meter audit` (run after every test) checks each budget's rows against its calls."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.catalog import Model
from meter.domain.amounts import INT64_MAX
from meter.service.sweeper import sweep_once
from meter.v1 import meter_pb2 as pb
from support import (
    RunningMeter,
    balance,
    balance_events,
    database_now,
    error_info,
    expect_error,
    funded_account,
    new_id,
    reserve_request,
    run_cli,
    suite_catalog,
)

StartMeter = Any

SEARCH = {"team": "search"}


async def _budget(meter: RunningMeter, account: str, key: str, value: str) -> pb.Budget:
    listed = await meter.stub.ListBudgets(pb.ListBudgetsRequest(account_id=account))
    [found] = [b for b in listed.budgets if (b.label_key, b.label_value) == (key, value)]
    return found


async def _set(meter: RunningMeter, account: str, cap: int, unit: int = pb.BUDGET_UNIT_TOKENS, **label: str):
    [(key, value)] = (label or SEARCH).items()
    return await meter.stub.SetBudget(
        pb.SetBudgetRequest(account_id=account, label_key=key, label_value=value, unit=unit, cap=cap)
    )


async def test_a_budget_admits_exactly_what_its_cap_holds_under_concurrent_reserves(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 1_000_000)
    answer = await _set(meter, account, 5_000)
    assert answer.created and (answer.budget.cap, answer.budget.remaining) == (5_000, 5_000)

    async def reserve() -> pb.ReserveResponse | grpc.aio.AioRpcError:
        try:  # basic: each holds 100 tokens; 50 fit the cap, 20 more do not
            return await meter.stub.Reserve(reserve_request(account, labels={**SEARCH, "agent": "a"}))
        except grpc.aio.AioRpcError as refused:
            return refused

    answers = await asyncio.gather(*(reserve() for _ in range(70)))
    placed = [a for a in answers if isinstance(a, pb.ReserveResponse)]
    refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert (len(placed), len(refused)) == (50, 20)
    for error in refused:
        info = error_info(error)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and info.reason == "BUDGET_EXCEEDED"
        assert dict(info.metadata) == {
            "labelKey": "team",
            "labelValue": "search",
            "unit": "tokens",
            "cap": "5000",
            "remaining": "0",
            "required": "100",
        }
    after = await balance(meter.stub, account)
    assert (after.held, after.purchased_remaining) == (5_000, 1_000_000 - 5_000)  # refusals held nothing
    budget = await _budget(meter, account, "team", "search")
    assert (budget.held, budget.used, budget.remaining) == (5_000, 0, 0)
    # Calls of other teams, or none, are not capped by it.
    other = await meter.stub.Reserve(reserve_request(account, labels={"team": "ads"}))
    assert other.held_tokens == 100

    # Commits count what was used (60 of each 100 held); Releases give back.
    for hold in placed[:10]:
        await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=30, output_tokens=30))
    for hold in placed[10:20]:
        await meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id))
    budget = await _budget(meter, account, "team", "search")
    assert (budget.held, budget.used, budget.remaining) == (3_000, 600, 1_400)
    fits = [await meter.stub.Reserve(reserve_request(account, labels=SEARCH)) for _ in range(14)]
    assert len(fits) == 14
    await expect_error(
        meter.stub.Reserve(reserve_request(account, labels=SEARCH)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "BUDGET_EXCEEDED",
    )


async def test_a_cost_budget_caps_provider_cost_at_the_pinned_prices(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 1_000_000)
    await _set(meter, account, 10_000, pb.BUDGET_UNIT_COST_MICROS, api_key="k1")
    labels = {"api_key": "k1"}

    def sonnet() -> pb.ReserveRequest:  # worst case $3 x 1 000 + $15 x 100 per million = 4 500 micro-USD
        return reserve_request(
            account, model="claude-sonnet-4-5", input_tokens=1_000, max_output_tokens=100, labels=labels
        )

    first, second = await meter.stub.Reserve(sonnet()), await meter.stub.Reserve(sonnet())
    info = await expect_error(meter.stub.Reserve(sonnet()), grpc.StatusCode.FAILED_PRECONDITION, "BUDGET_EXCEEDED")
    assert (info.metadata["unit"], info.metadata["remaining"], info.metadata["required"]) == (
        "cost_micros",
        "1000",
        "4500",
    )
    # The first call used 1 000 cached input and 20 output tokens: 300 + 300 micro-USD.
    await meter.stub.Commit(
        pb.CommitRequest(reservation_id=first.reservation_id, cached_input_tokens=1_000, output_tokens=20)
    )
    budget = await _budget(meter, account, "api_key", "k1")
    assert (budget.used, budget.held, budget.remaining) == (600, 4_500, 4_900)
    third = await meter.stub.Reserve(sonnet())
    assert third.held_tokens == 1_500
    await meter.stub.Release(pb.ReleaseRequest(reservation_id=second.reservation_id))
    await meter.stub.Release(pb.ReleaseRequest(reservation_id=third.reservation_id))


async def test_usage_beyond_a_hold_and_charge_usage_count_and_can_take_a_budget_past_its_cap(
    meter: RunningMeter,
) -> None:
    account = await funded_account(meter.stub, 1_000_000)
    await _set(meter, account, 1_000)
    hold = await meter.stub.Reserve(reserve_request(account, labels=SEARCH))  # holds 100
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=400, output_tokens=300))
    assert (await _budget(meter, account, "team", "search")).remaining == 300
    # A call let through while meter was down is counted, never refused.
    charged = await meter.stub.ChargeUsage(
        pb.ChargeUsageRequest(
            account_id=account, request_id=new_id("call"), model="basic", input_tokens=500, output_tokens=100,
            labels=SEARCH,
        )
    )  # fmt: skip
    assert charged.charged_tokens == 600
    budget = await _budget(meter, account, "team", "search")
    assert (budget.used, budget.held, budget.remaining) == (1_300, 0, -300)
    info = await expect_error(
        meter.stub.Reserve(reserve_request(account, input_tokens=1, max_output_tokens=1, labels=SEARCH)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "BUDGET_EXCEEDED",
    )
    assert info.metadata["remaining"] == "0"
    # Raising the cap moves what is available by the change; what was used still counts.
    raised = await _set(meter, account, 1_500)
    assert not raised.created and (raised.budget.used, raised.budget.remaining) == (1_300, 200)
    await meter.stub.Reserve(reserve_request(account, labels=SEARCH))


async def test_a_refusal_for_tokens_gives_back_what_the_budgets_held(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 150)
    await _set(meter, account, 1_000)
    await _set(meter, account, 1_000, agent="planner")
    await meter.stub.Reserve(reserve_request(account, labels={**SEARCH, "agent": "planner"}))
    await expect_error(
        meter.stub.Reserve(reserve_request(account, labels={**SEARCH, "agent": "planner"})),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_TOKENS",
    )
    for key, value in (("team", "search"), ("agent", "planner")):
        assert (await _budget(meter, account, key, value)).held == 100


async def test_a_budget_starts_again_with_each_period(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 1_000_000)
    await _set(meter, account, 300)
    held = [await meter.stub.Reserve(reserve_request(account, labels=SEARCH, ttl_seconds=3_600)) for _ in range(3)]
    await meter.stub.Commit(pb.CommitRequest(reservation_id=held[0].reservation_id, input_tokens=50, output_tokens=50))
    await expect_error(
        meter.stub.Reserve(reserve_request(account, labels=SEARCH)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "BUDGET_EXCEEDED",
    )
    period_end = (await balance(meter.stub, account)).period_end.ToDatetime()
    now = (await balance(meter.stub, account)).period_start.ToDatetime()
    meter.clock.advance(period_end - now + timedelta(seconds=1))
    fresh = await meter.stub.Reserve(reserve_request(account, labels=SEARCH))
    budget = await _budget(meter, account, "team", "search")
    assert (budget.used, budget.held, budget.remaining) == (0, 100, 200)
    assert budget.period_start.ToDatetime() > now
    # A hold of the earlier period no longer counts against it, however it ends.
    await meter.stub.Commit(pb.CommitRequest(reservation_id=held[1].reservation_id, input_tokens=50, output_tokens=50))
    await meter.stub.Release(pb.ReleaseRequest(reservation_id=held[2].reservation_id))
    assert (await _budget(meter, account, "team", "search")).remaining == 200
    await meter.stub.Release(pb.ReleaseRequest(reservation_id=fresh.reservation_id))


async def test_expired_holds_give_back_or_charge_their_budget(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 10_000)
    await meter.stub.SetPlan(
        pb.SetPlanRequest(account_id=account, plan_id="free", expired_holds=pb.EXPIRED_HOLDS_CHARGE)
    )
    await _set(meter, account, 1_000)
    hold = await meter.stub.Reserve(reserve_request(account, labels=SEARCH, ttl_seconds=60, max_output_tokens=350))
    meter.clock.advance(timedelta(seconds=61))
    await sweep_once(meter.service.meter)
    budget = await _budget(meter, account, "team", "search")
    assert (budget.used, budget.held) == (400, 0)  # charged its worst case
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=50, output_tokens=10))
    assert (await _budget(meter, account, "team", "search")).used == 60  # the late Commit settles the difference


async def test_budgets_are_set_listed_and_deleted_with_clear_refusals(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 1_000)
    await _set(meter, account, 500)
    info = await expect_error(
        _set(meter, account, 500, pb.BUDGET_UNIT_COST_MICROS), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"
    )
    assert info.metadata["field"] == "unit"
    for bad, field in (
        (pb.SetBudgetRequest(account_id=account, label_key="team", label_value="x", cap=1), "unit"),
        (pb.SetBudgetRequest(account_id=account, label_value="x", unit=pb.BUDGET_UNIT_TOKENS, cap=1), "label_key"),
        (pb.SetBudgetRequest(account_id=account, label_key="team", unit=pb.BUDGET_UNIT_TOKENS, cap=1), "label_value"),
        (pb.SetBudgetRequest(account_id=account, label_key="t", label_value="x", unit=1, cap=-1), "cap"),
    ):
        info = await expect_error(meter.stub.SetBudget(bad), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
        assert info.metadata["field"] == field
    await expect_error(
        meter.stub.SetBudget(pb.SetBudgetRequest(account_id=new_id(), label_key="t", label_value="x", unit=1, cap=1)),
        grpc.StatusCode.NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    )
    zero = await _set(meter, account, 0, agent="blocked")
    assert zero.budget.remaining == 0
    await expect_error(
        meter.stub.Reserve(reserve_request(account, labels={"agent": "blocked"})),
        grpc.StatusCode.FAILED_PRECONDITION,
        "BUDGET_EXCEEDED",
    )
    listed = await meter.stub.ListBudgets(pb.ListBudgetsRequest(account_id=account))
    assert [(b.label_key, b.label_value, b.cap) for b in listed.budgets] == [
        ("agent", "blocked", 0),
        ("team", "search", 500),
    ]
    deleted = await meter.stub.DeleteBudget(
        pb.DeleteBudgetRequest(account_id=account, label_key="agent", label_value="blocked")
    )
    assert deleted.deleted
    again = await meter.stub.DeleteBudget(
        pb.DeleteBudgetRequest(account_id=account, label_key="agent", label_value="blocked")
    )
    assert not again.deleted
    await meter.stub.Reserve(reserve_request(account, labels={"agent": "blocked"}))


async def test_meter_account_show_lists_the_budgets(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 100_000)
    await _set(meter, account, 1_000)
    await _set(meter, account, 2_500_000, pb.BUDGET_UNIT_COST_MICROS, api_key="k1")
    daily = pb.SetBudgetRequest(
        account_id=account, label_key="agent", label_value="crawler", unit=pb.BUDGET_UNIT_TOKENS, cap=700,
        window=pb.BUDGET_WINDOW_DAY,
    )  # fmt: skip
    day_end = (await meter.stub.SetBudget(daily)).budget.period_end.ToDatetime(UTC)
    month_end = (await balance(meter.stub, account)).period_end.ToDatetime(UTC)
    await meter.stub.Reserve(reserve_request(account, labels=SEARCH))
    code, out, err = await run_cli("account", "show", account, "--target", meter.address)
    assert code == 0, err
    lines = out.splitlines()
    start = lines.index("budgets (their current period)")
    assert [line.split() for line in lines[start + 1 : start + 5]] == [
        ["LABEL", "UNIT", "CAP", "USED", "HELD", "REMAINING", "PERIOD"],
        ["agent=crawler", "tokens", "700", "0", "0", "700", "day,", "to", *f"{day_end:%Y-%m-%d %H:%M:%S}".split()],
        ["api_key=k1", "cost", "$2.500000", "$0.000000", "$0.000000", "$2.500000", "month,", "to",
         *f"{month_end:%Y-%m-%d %H:%M:%S}".split()],
        ["team=search", "tokens", "1,000", "0", "100", "900", "month,", "to",
         *f"{month_end:%Y-%m-%d %H:%M:%S}".split()],
    ]  # fmt: skip


async def test_a_budget_with_nothing_left_refuses_a_free_call_and_the_largest_cap_can_be_set_again(
    meters: StartMeter,
) -> None:
    """A cap of 0 refuses every call, a model priced at nothing included (its worst case costs 0
    micro-USD: a call needs room for its worst case and at least 1); the largest cap the contract
    allows can be set, and set again."""
    catalog = suite_catalog()
    free = Model("local-free", "local", 0, 0, 1_000_000, 1_000_000)
    meter = await meters(catalog=replace(catalog, models={**catalog.models, free.id: free}))
    account = await funded_account(meter.stub, 10_000)
    await _set(meter, account, 0, pb.BUDGET_UNIT_COST_MICROS, agent="blocked")
    info = await expect_error(
        meter.stub.Reserve(reserve_request(account, model="local-free", labels={"agent": "blocked"})),
        grpc.StatusCode.FAILED_PRECONDITION,
        "BUDGET_EXCEEDED",
    )
    assert (info.metadata["cap"], info.metadata["remaining"], info.metadata["required"]) == ("0", "0", "1")
    await _set(meter, account, 1, pb.BUDGET_UNIT_COST_MICROS, agent="blocked")
    admitted = await meter.stub.Reserve(reserve_request(account, model="local-free", labels={"agent": "blocked"}))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=admitted.reservation_id, input_tokens=5, output_tokens=5))

    for _ in range(2):
        largest = await _set(meter, account, INT64_MAX)
        assert (largest.budget.cap, largest.budget.remaining) == (INT64_MAX, INT64_MAX)
    hold = await meter.stub.Reserve(reserve_request(account, labels=SEARCH))
    assert (await _budget(meter, account, "team", "search")).remaining == INT64_MAX - hold.held_tokens
    await meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id))


async def _server_now(meter: RunningMeter, engine: AsyncEngine) -> datetime:
    return await database_now(engine) + meter.clock.offset


async def test_a_daily_budget_starts_again_at_midnight_utc_and_tells_again(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    """A budget with its own window (a UTC day here) counts that day, whatever the account's month:
    holds of the day before no longer count against it however they end, and each day's levels
    are told once that day."""
    account = await funded_account(meter.stub, 1_000_000)
    now = await _server_now(meter, engine)
    midnight = datetime.combine(now.date() + timedelta(days=1), time(), UTC)
    meter.clock.advance(midnight - timedelta(minutes=2) - now)  # a little before the day ends
    answer = await meter.stub.SetBudget(
        pb.SetBudgetRequest(
            account_id=account, label_key="team", label_value="search", unit=pb.BUDGET_UNIT_TOKENS, cap=300,
            window=pb.BUDGET_WINDOW_DAY,
        )
    )  # fmt: skip
    assert answer.budget.window == pb.BUDGET_WINDOW_DAY
    assert (answer.budget.period_start.ToDatetime(UTC), answer.budget.period_end.ToDatetime(UTC)) == (
        midnight - timedelta(days=1),
        midnight,
    )
    held = [await meter.stub.Reserve(reserve_request(account, labels=SEARCH)) for _ in range(3)]
    await meter.stub.Commit(pb.CommitRequest(reservation_id=held[0].reservation_id, input_tokens=50, output_tokens=50))
    await expect_error(
        meter.stub.Reserve(reserve_request(account, labels=SEARCH)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "BUDGET_EXCEEDED",
    )
    warned = [e for e in await balance_events(engine, account) if e["type"].startswith("budget.")]
    assert {e["payload"]["period_start"] for e in warned} == {(midnight - timedelta(days=1)).isoformat()}

    meter.clock.advance(timedelta(minutes=3))  # the next day, same account month
    assert (await balance(meter.stub, account)).period_start.ToDatetime(UTC) < midnight - timedelta(days=1)
    fresh = await meter.stub.Reserve(reserve_request(account, labels=SEARCH))
    budget = await _budget(meter, account, "team", "search")
    assert (budget.used, budget.held, budget.remaining) == (0, 100, 200)
    assert (budget.period_start.ToDatetime(UTC), budget.period_end.ToDatetime(UTC)) == (
        midnight,
        midnight + timedelta(days=1),
    )
    await meter.stub.Commit(pb.CommitRequest(reservation_id=held[1].reservation_id, input_tokens=50, output_tokens=50))
    await meter.stub.Release(pb.ReleaseRequest(reservation_id=held[2].reservation_id))
    assert (await _budget(meter, account, "team", "search")).remaining == 200  # yesterday's holds
    await meter.stub.Commit(
        pb.CommitRequest(reservation_id=fresh.reservation_id, input_tokens=100, output_tokens=150)
    )  # 250 of 300: 80 % of today's cap
    warned = [e for e in await balance_events(engine, account) if e["type"].startswith("budget.")]
    today = [
        (e["payload"]["level"], e["payload"]["used"])
        for e in warned
        if e["payload"]["period_start"] == midnight.isoformat()
    ]
    assert today == [("80", 250)]


async def test_weekly_and_calendar_month_windows_and_a_window_kept(meter: RunningMeter) -> None:
    """A week runs from Monday 00:00 UTC, a calendar month from its first day; a budget set again
    without a window keeps its own, and one with another window is refused (as another unit is)."""
    account = await funded_account(meter.stub, 1_000_000)

    async def set_window(value: str, window: int) -> pb.Budget:
        request = pb.SetBudgetRequest(
            account_id=account, label_key="team", label_value=value, unit=pb.BUDGET_UNIT_TOKENS, cap=500,
            window=window,
        )  # fmt: skip
        return (await meter.stub.SetBudget(request)).budget

    week = await set_window("week", pb.BUDGET_WINDOW_WEEK)
    start, end = week.period_start.ToDatetime(UTC), week.period_end.ToDatetime(UTC)
    assert (start.weekday(), start.time(), end - start) == (0, time(), timedelta(days=7))
    month = await set_window("month", pb.BUDGET_WINDOW_CALENDAR_MONTH)
    start, end = month.period_start.ToDatetime(UTC), month.period_end.ToDatetime(UTC)
    assert (start.day, start.time(), end.day, end.time()) == (1, time(), 1, time())
    assert (end.year * 12 + end.month) - (start.year * 12 + start.month) == 1
    plain = await set_window("plain", pb.BUDGET_WINDOW_UNSPECIFIED)
    assert plain.window == pb.BUDGET_WINDOW_ACCOUNT_MONTH
    account_month = await balance(meter.stub, account)
    assert (plain.period_start, plain.period_end) == (account_month.period_start, account_month.period_end)

    kept = await set_window("week", pb.BUDGET_WINDOW_UNSPECIFIED)
    assert (kept.window, kept.period_start) == (pb.BUDGET_WINDOW_WEEK, week.period_start)
    info = await expect_error(
        set_window("week", pb.BUDGET_WINDOW_DAY), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"
    )
    assert info.metadata["field"] == "window"
    info = await expect_error(set_window("odd", 9), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert info.metadata["field"] == "window"
