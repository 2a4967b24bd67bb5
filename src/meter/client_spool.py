"""A proxy's durable spool of Commits and Releases (stdlib sqlite3, one local file).

Each settling call is written here before it is sent and deleted once meter has answered it (a
refusal is an answer too). A call that meter could not be reached for stays, across restarts of
the proxy, until `MeterClient` sends it again, oldest first. Written ahead of sending, so that a
proxy killed while it waits for meter loses nothing either. WAL with synchronous=NORMAL: a write
survives the process (what the spool is for) without an fsync per call.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Gauge

SPOOL_DEPTH = Gauge(
    "meter_client_spool_depth", "Commits and Releases waiting in the client's spool for meter to answer", ["spool"]
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spooled (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    method TEXT NOT NULL,
    request BLOB NOT NULL,
    spooled_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
)
"""


@dataclass(frozen=True)
class SpooledCall:
    id: int
    method: str  # Commit | Release | ChargeUsage
    request: bytes  # the serialized request: sent again as it was
    spooled_at: float
    attempts: int


class CommitSpool:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._publish()

    def add(self, method: str, request: bytes) -> int:
        cursor = self._db.execute(
            "INSERT INTO spooled (method, request, spooled_at) VALUES (?, ?, ?)", (method, request, time.time())
        )
        self._publish()
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def answered(self, call_id: int) -> None:
        self._db.execute("DELETE FROM spooled WHERE id = ?", (call_id,))
        self._publish()

    def failed(self, call_id: int, error: str) -> None:
        self._db.execute(
            "UPDATE spooled SET attempts = attempts + 1, last_error = ? WHERE id = ?", (error[:500], call_id)
        )

    def oldest(self, limit: int = 100, after_id: int = 0) -> list[SpooledCall]:
        rows = self._db.execute(
            "SELECT id, method, request, spooled_at, attempts FROM spooled WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()
        return [SpooledCall(*row) for row in rows]

    @property
    def depth(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM spooled").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def _publish(self) -> None:
        SPOOL_DEPTH.labels(str(self.path)).set(self.depth)
