"""Per-caller rates through the real server: N calls a second to a method allowed, N+1 refused
RATE_LIMITED (callerRate) with a RetryInfo delay that is enough; other methods unaffected; two
replicas enforce one rate once they have synced."""

from __future__ import annotations

import time
from datetime import timedelta

import grpc
from conftest import StartMeter
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from meter.domain.callers import hash_token, new_token
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, error_info, eventually, expect_error

TOKEN = new_token()
CALLERS = (
    f'[[caller]]\nname = "dashboard"\nrole = "operator"\ntoken_sha256 = "{hash_token(TOKEN)}"\n'
    "requests_per_second = { GetCatalog = 3 }\n"
)
AS_DASHBOARD = (("authorization", f"Bearer {TOKEN}"),)


async def start(meters: StartMeter, **settings: object) -> RunningMeter:
    return await meters(callers_toml=CALLERS, webhook_token=TOKEN, **settings)


def at_second_start(*meters: RunningMeter) -> None:
    """Move the servers' clocks to just after a second begins (the rate's window)."""
    into = (time.time() + meters[0].clock.offset_seconds) % 1
    for meter in meters:
        meter.clock.advance(timedelta(seconds=1 - into + 0.005))


async def catalog(meter: RunningMeter) -> None:
    await meter.stub.GetCatalog(pb.GetCatalogRequest(), metadata=AS_DASHBOARD)


async def refused(meter: RunningMeter) -> tuple[dict[str, str], float]:
    try:
        await catalog(meter)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        info = error_info(error)
        assert info.reason == "RATE_LIMITED"
        status = rpc_status.from_call(error)
        assert status is not None
        for detail in status.details:
            retry = error_details_pb2.RetryInfo()
            if detail.Unpack(retry):
                return dict(info.metadata), retry.retry_delay.ToNanoseconds() / 1e9
        raise AssertionError("no RetryInfo") from error
    raise AssertionError("expected RATE_LIMITED")


async def test_n_calls_a_second_allowed_the_next_refused_until_the_next_second(meters: StartMeter) -> None:
    meter = await start(meters)
    at_second_start(meter)
    for _ in range(3):
        await catalog(meter)
    metadata, delay = await refused(meter)
    assert metadata == {"limit": "callerRate", "value": "3"}
    assert 0 < delay <= 1
    # The rate is per method: the same caller's other calls go on.
    await expect_error(  # answered, not rate-limited
        meter.stub.ListOpenReservations(pb.ListOpenReservationsRequest(account_id="nobody"), metadata=AS_DASHBOARD),
        grpc.StatusCode.NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    )
    meter.clock.advance(timedelta(seconds=delay))
    await catalog(meter)


async def test_two_replicas_enforce_one_rate_once_synced(meters: StartMeter) -> None:
    first = await start(meters, caller_rate_sync_ms=10)
    second = await start(meters, caller_rate_sync_ms=10)
    at_second_start(first, second)
    await catalog(first)
    await catalog(first)
    rates = second.service.grpc.gate.caller_rates
    assert rates is not None

    async def seen() -> int:
        return rates.others("dashboard", "GetCatalog")

    await eventually(seen, lambda count: count == 2, within=0.5)
    await catalog(second)
    metadata, _ = await refused(second)
    assert metadata == {"limit": "callerRate", "value": "3"}
