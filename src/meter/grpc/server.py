"""The gRPC server: MeterService, the standard health service and server reflection (so
grpcurl works with no proto files)."""

from __future__ import annotations

import logging
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from meter.grpc.drain import Drain
from meter.grpc.errors import translate_errors
from meter.grpc.servicer import MeterServicer
from meter.service.context import Meter
from meter.v1 import meter_pb2, meter_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = meter_pb2.DESCRIPTOR.services_by_name["MeterService"].full_name


class GrpcServer:
    def __init__(self, meter: Meter, address: str) -> None:
        self._server = grpc.aio.server()
        self.drain = Drain()
        servicer = translate_errors(MeterServicer(meter), meter_pb2_grpc.MeterServiceServicer, self.drain)
        meter_pb2_grpc.add_MeterServiceServicer_to_server(servicer, self._server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._server,
        )
        self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        host = address.rpartition(":")[0]
        self.address = f"{host}:{self.port}"

    async def start(self) -> None:
        await self._server.start()
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_seconds: float) -> None:
        """Health NOT_SERVING first; then refuse new RPCs and let in-flight ones finish within the
        grace (the drain); then stop gRPC itself, with what is left of the grace."""
        started = time.monotonic()
        await self.health.enter_graceful_shutdown()
        if not await self.drain.start(grace_seconds):
            log.warning("stopping with %d RPCs still in flight after %.1f s", self.drain.in_flight, grace_seconds)
        await self._server.stop(max(0.0, grace_seconds - (time.monotonic() - started)))
