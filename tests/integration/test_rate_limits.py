"""Per-account rate limits through the real server: exact at their boundaries (N allowed, N+1
refused), on the fast and the general path, across two replicas; a refusal changes nothing and
its RetryInfo delay is enough for the next try to pass; open holds stop counting when released,
committed or expired."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import grpc
from conftest import StartMeter
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy.ext.asyncio import AsyncEngine

from meter import catalog as catalog_file
from meter.catalog import Catalog
from meter.domain.limits import RateLimits
from meter.service.sweeper import sweep_once
from meter.v1 import meter_pb2 as pb
from support import (
    RunningMeter,
    database_now,
    error_info,
    expect_error,
    fingerprint,
    funded_account,
    reserve_request,
    suite_catalog,
)

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def limited(**limits: int) -> Catalog:
    """The suite's catalog with the free plan's limits set to `limits` (others none)."""
    suite = suite_catalog()
    plans = dict(suite.plans)
    plans["free"] = replace(plans["free"], limits=RateLimits(**limits))
    return replace(suite, plans=plans)


async def at_minute_start(engine: AsyncEngine, *meters: RunningMeter) -> None:
    """Move the servers' clocks to just after the start of a minute, so that a test's calls fall
    in one rate window whatever the wall clock says."""
    now = await database_now(engine) + meters[0].clock.offset
    into = now.second + now.microsecond / 1e6
    for meter in meters:
        meter.clock.advance(timedelta(seconds=60 - into + 0.2))


async def refusal(meter: RunningMeter, request: pb.ReserveRequest) -> tuple[dict[str, str], float | None]:
    """The RATE_LIMITED refusal's ErrorInfo metadata and RetryInfo delay (None without one)."""
    try:
        await meter.stub.Reserve(request)
    except grpc.aio.AioRpcError as error:
        assert error.code() == EXHAUSTED, error.details()
        info = error_info(error)
        assert info.reason == "RATE_LIMITED"
        status = rpc_status.from_call(error)
        assert status is not None
        delay = None
        for detail in status.details:
            retry = error_details_pb2.RetryInfo()
            if detail.Unpack(retry):
                delay = retry.retry_delay.ToNanoseconds() / 1e9
        return dict(info.metadata), delay
    raise AssertionError("expected RATE_LIMITED")


async def test_requests_per_minute_n_allowed_n_plus_one_refused_and_retry_info_is_enough(
    meters: StartMeter, engine: AsyncEngine
) -> None:
    meter = await meters(catalog=limited(requests_per_minute=5))
    account = await funded_account(meter.stub, 10_000)
    await at_minute_start(engine, meter)
    for _ in range(5):
        hold = await meter.stub.Reserve(reserve_request(account))
        await meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id))
    before = await fingerprint(engine)
    metadata, delay = await refusal(meter, reserve_request(account))
    assert metadata == {"limit": "requestsPerMinute", "value": "5"}
    assert delay is not None and 55 < delay <= 60  # the rest of the minute
    assert await fingerprint(engine) == before, "a refused Reserve changed the database"
    meter.clock.advance(timedelta(seconds=delay))
    await meter.stub.Reserve(reserve_request(account))  # the advised delay was enough


async def test_tokens_per_minute_counts_held_tokens_exactly(meters: StartMeter, engine: AsyncEngine) -> None:
    meter = await meters(catalog=limited(tokens_per_minute=500))
    account = await funded_account(meter.stub, 10_000)
    await at_minute_start(engine, meter)
    for _ in range(2):
        await meter.stub.Reserve(reserve_request(account, input_tokens=100, max_output_tokens=100))  # 200 each
    metadata, delay = await refusal(meter, reserve_request(account, input_tokens=100, max_output_tokens=100))
    assert metadata == {"limit": "tokensPerMinute", "value": "500"} and delay is not None
    await meter.stub.Reserve(reserve_request(account, input_tokens=50, max_output_tokens=50))  # exactly 500
    await refusal(meter, reserve_request(account, input_tokens=0, max_output_tokens=1))
    # A Reserve bigger than the limit itself can never pass: refused without a delay to wait for.
    metadata, delay = await refusal(meter, reserve_request(account, input_tokens=400, max_output_tokens=200))
    assert metadata == {"limit": "tokensPerMinute", "value": "500"} and delay is None


async def test_concurrent_holds_count_open_holds_until_released_committed_or_expired(
    meters: StartMeter, engine: AsyncEngine
) -> None:
    meter = await meters(catalog=limited(concurrent_holds=3), sweep_interval_seconds=3600.0)
    account = await funded_account(meter.stub, 10_000)
    holds = [await meter.stub.Reserve(reserve_request(account, ttl_seconds=60 * (i + 1))) for i in range(3)]
    metadata, delay = await refusal(meter, reserve_request(account))
    assert metadata == {"limit": "concurrentHolds", "value": "3"}
    # The soonest expiry is about 60 s away; then one sweep (an hour here) gives the hold back.
    assert delay is not None and 3600 + 55 < delay <= 3600 + 60
    await meter.stub.Release(pb.ReleaseRequest(reservation_id=holds[0].reservation_id))
    fourth = await meter.stub.Reserve(reserve_request(account, ttl_seconds=600))
    await refusal(meter, reserve_request(account))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=fourth.reservation_id, input_tokens=10))
    await meter.stub.Reserve(reserve_request(account, ttl_seconds=600))
    await refusal(meter, reserve_request(account))
    # The hold of 120 s expires; once the sweeper has given it back, it no longer counts.
    meter.clock.advance(timedelta(seconds=121))
    await refusal(meter, reserve_request(account))  # expired, not yet swept: still open
    while (await sweep_once(meter.service.meter)).holds_expired:
        pass
    await meter.stub.Reserve(reserve_request(account, ttl_seconds=600))
    await refusal(meter, reserve_request(account))


async def test_the_general_path_counts_and_refuses_too(meters: StartMeter, engine: AsyncEngine) -> None:
    """1 600 tokens spread over 16 buckets (100 each): a Reserve of 150 fits no single bucket and
    goes through the general path, which locks them all."""
    meter = await meters(catalog=limited(requests_per_minute=3))
    account = await funded_account(meter.stub, 1600)
    await at_minute_start(engine, meter)
    for _ in range(3):
        hold = await meter.stub.Reserve(reserve_request(account, input_tokens=100, max_output_tokens=50))
        await meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id))
    metadata, _ = await refusal(meter, reserve_request(account, input_tokens=100, max_output_tokens=50))
    assert metadata == {"limit": "requestsPerMinute", "value": "3"}
    await refusal(meter, reserve_request(account))  # a small one, which the fast path would place


async def test_two_replicas_enforce_one_limit(meters: StartMeter, engine: AsyncEngine) -> None:
    catalog = limited(requests_per_minute=6)
    first, second = await meters(catalog=catalog), await meters(catalog=catalog)
    account = await funded_account(first.stub, 10_000)
    await at_minute_start(engine, first, second)
    for index in range(6):
        await (first if index % 2 else second).stub.Reserve(reserve_request(account))
    for replica in (first, second):
        metadata, _ = await refusal(replica, reserve_request(account))
        assert metadata == {"limit": "requestsPerMinute", "value": "6"}


async def test_a_replayed_reserve_is_answered_not_counted(meters: StartMeter, engine: AsyncEngine) -> None:
    meter = await meters(catalog=limited(requests_per_minute=2))
    account = await funded_account(meter.stub, 10_000)
    await at_minute_start(engine, meter)
    request = reserve_request(account)
    first = await meter.stub.Reserve(request)
    again = await meter.stub.Reserve(request)  # the same request_id: the same hold, nothing counted
    assert again.reservation_id == first.reservation_id
    await meter.stub.Reserve(reserve_request(account))
    await refusal(meter, reserve_request(account))


async def test_the_packaged_catalog_serves_each_plans_limits(meters: StartMeter) -> None:
    meter = await meters(catalog=catalog_file.load())
    plans = {p.id: p.limits for p in (await meter.stub.GetCatalog(pb.GetCatalogRequest())).plans}
    starter = plans["starter"]  # the free tier
    assert (starter.requests_per_minute, starter.tokens_per_minute, starter.concurrent_holds) == (
        60,
        200_000,
        10,
    )
    assert plans["enterprise"].requests_per_minute == 0


async def test_a_refusal_for_insufficient_tokens_is_still_that(meters: StartMeter) -> None:
    meter = await meters(catalog=limited(requests_per_minute=100))
    account = await funded_account(meter.stub, 10)
    await expect_error(
        meter.stub.Reserve(reserve_request(account)), grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_TOKENS"
    )


async def test_get_balance_reports_limits_and_headroom(meters: StartMeter, engine: AsyncEngine) -> None:
    meter = await meters(catalog=limited(requests_per_minute=5, tokens_per_minute=500, concurrent_holds=3))
    account = await funded_account(meter.stub, 10_000)
    unlimited = await funded_account(meter.stub, 10_000, plan="enterprise")
    await at_minute_start(engine, meter)
    for _ in range(2):
        await meter.stub.Reserve(reserve_request(account, input_tokens=100, max_output_tokens=100))
    answer = await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))
    limits, room = answer.limits, answer.headroom
    assert (limits.requests_per_minute, limits.tokens_per_minute, limits.concurrent_holds) == (5, 500, 3)
    assert (room.requests_this_minute, room.tokens_this_minute, room.holds) == (3, 100, 1)
    now = await database_now(engine) + meter.clock.offset
    minute_ends = room.minute_ends.ToDatetime(tzinfo=now.tzinfo)
    assert minute_ends.second == 0 and timedelta(0) < minute_ends - now <= timedelta(minutes=1)
    answer = await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=unlimited))
    assert answer.limits == pb.RateLimits() and not answer.HasField("headroom")


async def test_refusals_are_counted_by_limit(meters: StartMeter, engine: AsyncEngine) -> None:
    from test_observability import delta, scrape

    meter = await meters(catalog=limited(requests_per_minute=1, concurrent_holds=5))
    account = await funded_account(meter.stub, 10_000)
    await at_minute_start(engine, meter)
    before = await scrape(meter)
    await meter.stub.Reserve(reserve_request(account))
    await refusal(meter, reserve_request(account))
    await refusal(meter, reserve_request(account))
    after = await scrape(meter)
    assert delta(before, after, "meter_rate_limited_total", limit="requestsPerMinute") == 2
    assert delta(before, after, "meter_rejections_total", method="Reserve", reason="RATE_LIMITED") == 2
    assert delta(before, after, "meter_rpcs_total", method="Reserve", code="RESOURCE_EXHAUSTED") == 2


async def test_an_enterprise_account_gets_its_own_limits_through_set_plan(
    meters: StartMeter, engine: AsyncEngine
) -> None:
    meter = await meters(catalog=limited(requests_per_minute=100))
    account = await funded_account(meter.stub, 10_000, plan="enterprise")

    async def limits() -> tuple[int, int, int]:
        found = (await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))).limits
        return found.requests_per_minute, found.tokens_per_minute, found.concurrent_holds

    own = pb.RateLimits(requests_per_minute=2, concurrent_holds=50)
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="enterprise", limits=own))
    assert await limits() == (2, 0, 50)
    await at_minute_start(engine, meter)
    await meter.stub.Reserve(reserve_request(account))
    await meter.stub.Reserve(reserve_request(account))
    metadata, _ = await refusal(meter, reserve_request(account))
    assert metadata == {"limit": "requestsPerMinute", "value": "2"}
    # A SetPlan that leaves limits out (a Stripe subscription update) keeps them.
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="enterprise"))
    assert await limits() == (2, 0, 50)
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="enterprise", limits=pb.RateLimits()))
    assert await limits() == (0, 0, 0)
    await meter.stub.Reserve(reserve_request(account))
    # A catalog plan has its limits in the catalog: none may be given, and the account's own go.
    info = await expect_error(
        meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="free", limits=own)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )
    assert info.metadata["field"] == "limits"
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="enterprise", limits=own))
    await meter.stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="free"))
    assert await limits() == (100, 0, 0)
    await expect_error(
        meter.stub.SetPlan(
            pb.SetPlanRequest(account_id=account, plan_id="enterprise", limits=pb.RateLimits(requests_per_minute=-1))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )
