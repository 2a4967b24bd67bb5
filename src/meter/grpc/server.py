"""The gRPC server: MeterService, the standard health service and server reflection (so
grpcurl works with no proto files)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from meter.grpc.errors import translate_errors
from meter.grpc.servicer import MeterServicer
from meter.service.context import Meter
from meter.v1 import meter_pb2, meter_pb2_grpc

SERVICE_NAME = meter_pb2.DESCRIPTOR.services_by_name["MeterService"].full_name


class GrpcServer:
    def __init__(self, meter: Meter, address: str) -> None:
        self._server = grpc.aio.server()
        servicer = translate_errors(MeterServicer(meter), meter_pb2_grpc.MeterServiceServicer)
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
        """Refuse new RPCs (health NOT_SERVING first), let in-flight ones finish within the grace."""
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace_seconds)
