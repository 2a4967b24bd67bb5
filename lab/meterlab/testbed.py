"""A local test bed for `meter bench` and `meter chaos`: a fresh database on the embedded or the
configured PostgreSQL, and real `meter serve` processes that can be killed and started again on
the same ports (so clients reconnect to the same address, as they would to a restarted pod)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import make_url


async def fresh_database(server_url: str, prefix: str) -> str:
    """A new, empty database on the server at `server_url`, and its URL."""
    url = make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return url.set(database=name).render_as_string(hide_password=False)


def free_port() -> int:
    """A free port below the kernel's ephemeral range: a server restarted on it must find it free
    again, and ports from the ephemeral range are handed to outgoing connections meanwhile."""
    low, _ = _ephemeral_range()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12_000), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


class ServerProcess:
    """`meter serve` in a subprocess on ports fixed at construction, restartable."""

    def __init__(
        self, database_url: str, extra_env: dict[str, str] | None = None, log_path: Path | None = None
    ) -> None:
        """`log_path`: the server's stderr (its log) goes there, appended, instead of ours."""
        self.log_path = log_path
        self.address = f"127.0.0.1:{free_port()}"
        self.http_address = f"127.0.0.1:{free_port()}"
        self.env = {
            **os.environ,
            "METER_DATABASE_URL": database_url,
            "METER_GRPC_ADDR": self.address,
            "METER_HTTP_ADDR": self.http_address,
            "METER_LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def stats(self) -> psutil.Process:
        assert self.process is not None
        return psutil.Process(self.process.pid)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 (the child keeps it)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "meter.cli", "serve"], env=self.env, stdout=subprocess.DEVNULL, stderr=log
            )
        finally:
            if log is not None:
                log.close()

    async def ready(self, within: float = 60.0) -> None:
        """Wait until health says SERVING (polling, with a deadline)."""
        deadline = time.monotonic() + within
        async with grpc.aio.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline or not self.running:
                    raise RuntimeError("meter serve did not become ready")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no draining, no cleanup, as when a node dies."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait: the graceful stop; returns the exit code."""
        if self.process is None:
            return None
        if self.running:
            self.process.terminate()
        return self.process.wait(timeout=timeout)
