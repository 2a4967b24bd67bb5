"""Every RPC handler answers a MeterError with its status and anything else with INTERNAL."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meter.domain.errors import AccountNotFound
from meter.grpc.drain import Drain
from meter.grpc.handling import Gate, Readiness, wrap_service
from support import expect_error


class Faulty(health_pb2_grpc.HealthServicer):
    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
        if request.service == "bug":
            raise RuntimeError("a bug")
        raise AccountNotFound(request.service)


async def test_domain_errors_keep_their_status_and_bugs_are_internal() -> None:
    server = grpc.aio.server()
    gate = Gate(callers=None, readiness=Readiness(ready=True), drain=Drain())
    servicer = wrap_service(Faulty(), health_pb2_grpc.HealthServicer, gate)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            info = await expect_error(
                stub.Check(health_pb2.HealthCheckRequest(service="acme")),
                grpc.StatusCode.NOT_FOUND,
                "ACCOUNT_NOT_FOUND",
            )
            assert info.domain == "meter"
            await expect_error(
                stub.Check(health_pb2.HealthCheckRequest(service="bug")), grpc.StatusCode.INTERNAL, "INTERNAL"
            )
    finally:
        await server.stop(0)
