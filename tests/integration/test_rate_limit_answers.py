"""What a rate-limited call looks like on the wire and how the Python client honours it:
RESOURCE_EXHAUSTED with ErrorInfo RATE_LIMITED naming the limit and its value, and a
google.rpc.RetryInfo delay the client waits out when asked to. (Which calls are over a limit is
enforcement's business; here a stand-in MeterService refuses on cue, behind the real wrapper.)"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from meter.client import MeterClient, MeterRpcError
from meter.domain.errors import RateLimited
from meter.domain.limits import REQUESTS_PER_MINUTE
from meter.grpc.drain import Drain
from meter.grpc.handling import Gate, Readiness, wrap_service
from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc
from support import expect_error

DELAY = 0.25


class Limited(meter_pb2_grpc.MeterServiceServicer):
    """Refuses the first `refusals` GetCatalog calls as over 60 requests per minute."""

    def __init__(self) -> None:
        self.refusals = 0
        self.calls = 0

    async def GetCatalog(self, request: pb.GetCatalogRequest, context: Any) -> pb.GetCatalogResponse:
        self.calls += 1
        if self.calls <= self.refusals:
            raise RateLimited(REQUESTS_PER_MINUTE, 60, DELAY)
        return pb.GetCatalogResponse(version="served")


@pytest.fixture
async def limited() -> AsyncIterator[tuple[str, Limited]]:
    servicer = Limited()
    server = grpc.aio.server()
    gate = Gate(callers=None, readiness=Readiness(ready=True), drain=Drain())
    meter_pb2_grpc.add_MeterServiceServicer_to_server(
        wrap_service(servicer, meter_pb2_grpc.MeterServiceServicer, gate), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", servicer
    await server.stop(0)


async def test_the_refusal_names_the_limit_and_carries_retry_info(limited: tuple[str, Limited]) -> None:
    address, servicer = limited
    servicer.refusals = 1
    async with grpc.aio.insecure_channel(address) as channel:
        call = meter_pb2_grpc.MeterServiceStub(channel).GetCatalog(pb.GetCatalogRequest())
        info = await expect_error(call, grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        assert dict(info.metadata) == {"limit": "requestsPerMinute", "value": "60"}
        try:
            await call
        except grpc.aio.AioRpcError as error:
            status = rpc_status.from_call(error)
        assert status is not None
        delays = []
        for detail in status.details:
            retry = error_details_pb2.RetryInfo()
            if detail.Unpack(retry):
                delays.append(retry.retry_delay.ToNanoseconds() / 1e9)
        assert delays == [DELAY]


async def test_the_client_raises_at_once_unless_asked_to_wait(limited: tuple[str, Limited]) -> None:
    address, servicer = limited
    servicer.refusals = 1
    async with MeterClient(address) as client:
        with pytest.raises(MeterRpcError) as refused:
            await client.get_catalog()
    assert (refused.value.code, refused.value.reason, refused.value.retry_delay) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        DELAY,
    )
    assert refused.value.metadata == {"limit": "requestsPerMinute", "value": "60"}
    assert servicer.calls == 1


async def test_the_client_waits_the_advised_delay_and_tries_again(limited: tuple[str, Limited]) -> None:
    address, servicer = limited
    servicer.refusals = 2
    started = time.monotonic()
    async with MeterClient(address, rate_limit_wait_seconds=1.0) as client:
        assert (await client.get_catalog()).version == "served"
    assert servicer.calls == 3
    assert time.monotonic() - started >= 2 * DELAY  # it waited what the server advised, twice


async def test_the_client_gives_up_when_the_waits_would_exceed_its_budget(limited: tuple[str, Limited]) -> None:
    address, servicer = limited
    servicer.refusals = 5
    async with MeterClient(address, rate_limit_wait_seconds=0.3) as client:
        with pytest.raises(MeterRpcError) as refused:
            await client.get_catalog()
    assert refused.value.reason == "RATE_LIMITED"
    assert servicer.calls == 2  # one wait of 0.25 s fits in 0.3 s, a second does not
