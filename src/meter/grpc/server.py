"""The gRPC server: MeterService, the standard health service and server reflection (so
grpcurl works with no proto files). Health and reflection answer without a token: a load
balancer's probe carries none, and the schema they describe is the public contract."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from meter.grpc.drain import Drain
from meter.grpc.handling import Gate, Readiness, wrap_service
from meter.grpc.servicer import MeterServicer
from meter.service.context import Meter
from meter.v1 import meter_pb2, meter_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = meter_pb2.DESCRIPTOR.services_by_name["MeterService"].full_name
METHODS = frozenset(method.name for method in meter_pb2.DESCRIPTOR.services_by_name["MeterService"].methods)


class GrpcServer:
    """Listens on `address` (with TLS when `credentials` are given) and, with `local_socket`,
    also on a Unix socket in a private folder: the in-process webhook adapter calls through it,
    so it needs neither a client certificate nor a port anyone else can reach. `options`: grpc
    core's channel arguments (listeners.grpc_options: connections, handshake and idle time)."""

    def __init__(
        self,
        meter: Meter,
        address: str,
        gate: Gate | None = None,
        *,
        credentials: grpc.ServerCredentials | None = None,
        local_socket: bool = False,
        options: Sequence[tuple[str, int]] = (),
    ) -> None:
        self._server = grpc.aio.server(options=options)
        self.gate = gate or Gate(callers=None, readiness=Readiness(ready=True), drain=Drain())
        self.drain = self.gate.drain
        servicer = wrap_service(
            MeterServicer(meter, self.gate.drain.stopping), meter_pb2_grpc.MeterServiceServicer, self.gate
        )
        meter_pb2_grpc.add_MeterServiceServicer_to_server(servicer, self._server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._server,
        )
        if credentials is None:
            self.port = self._server.add_insecure_port(address)
        else:
            self.port = self._server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")
        host = address.rpartition(":")[0]
        self.address = f"{host}:{self.port}"
        self._socket_folder = tempfile.mkdtemp(prefix="meter-") if local_socket else None
        self.local_address = ""
        if self._socket_folder is not None:
            os.chmod(self._socket_folder, 0o700)
            self.local_address = f"unix:{self._socket_folder}/grpc.sock"
            if not self._server.add_insecure_port(self.local_address):
                raise OSError(f"cannot listen on {self.local_address}")

    async def start(self) -> None:
        """Listen, NOT_SERVING until `serving()`: probes see the server before it can serve."""
        await self._server.start()
        await self._set(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def serving(self) -> None:
        await self._set(health_pb2.HealthCheckResponse.SERVING)

    async def _set(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def stop(self, grace_seconds: float) -> None:
        """Health NOT_SERVING first; then refuse new RPCs and let in-flight ones finish within the
        grace (the drain); then stop gRPC itself, with what is left of the grace."""
        started = time.monotonic()
        await self.health.enter_graceful_shutdown()
        if not await self.drain.start(grace_seconds):
            log.warning("stopping with %d RPCs still in flight after %.1f s", self.drain.in_flight, grace_seconds)
        await self._server.stop(max(0.0, grace_seconds - (time.monotonic() - started)))
        if self._socket_folder is not None:
            shutil.rmtree(self._socket_folder, ignore_errors=True)
