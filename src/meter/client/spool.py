"""A proxy's durable spool of Commits, Releases and ChargeUsages (stdlib sqlite3, one local file).

Each settling call is written here before it is sent and deleted once meter has answered it (a
refusal is an answer too). A call that meter could not be reached for stays, across restarts of
the proxy, until `MeterClient` sends it again, oldest first. Written ahead of sending, so that a
proxy killed while it waits for meter loses nothing either. WAL with synchronous=NORMAL: a write
survives the process (what the spool is for) without an fsync per call.

The spool is never why a call is lost. A spool that cannot be written (disk full, `max_bytes`
reached, file read-only, locked or corrupt; or removed or replaced while open, so that what is
written to it would not be there after a restart) makes `add` raise `SpoolUnwritable`, and the
caller sends the call without it. Bookkeeping after an answer that fails (`answered`, `failed`) is
logged and counted, and the row stays: it is sent again later, and meter answers a replay as it
answered the first time. A row that cannot be read as a call (a method this client does not
know, from another version; request bytes that do not parse) is moved to the `set_aside` table
with its reason, logged once and counted, and the rows after it go on in order.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter, Gauge

SPOOL_DEPTH = Gauge(
    "meter_client_spool_depth", "Commits and Releases waiting in the client's spool for meter to answer", ["spool"]
)
SPOOL_SET_ASIDE = Gauge(
    "meter_client_spool_set_aside",
    "Rows of the client's spool that cannot be read as a call, kept apart in its set_aside table for an operator",
    ["spool"],
)
SPOOL_ERRORS = Counter(
    "meter_client_spool_errors",
    "Times the client's spool could not be written or read (step add: a call sent without being spooled; "
    "answered, failed: bookkeeping after an answer, the row kept; read, set_aside, open)",
    ["spool", "step"],
)

_SPOOLED = """
CREATE TABLE IF NOT EXISTS spooled (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    method TEXT NOT NULL,
    request BLOB NOT NULL,
    spooled_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
)
"""
_SET_ASIDE = """
CREATE TABLE IF NOT EXISTS set_aside (
    id INTEGER PRIMARY KEY,
    method TEXT,
    request BLOB,
    spooled_at REAL,
    attempts INTEGER,
    last_error TEXT,
    reason TEXT NOT NULL,
    set_aside_at REAL NOT NULL
)
"""
# One writer (this process) uses the file; another holding its lock is an operator's shell. Waiting
# blocks the event loop, so give up soon: the call is sent without the spool, or its row kept.
_BUSY_TIMEOUT_SECONDS = 0.25

log = logging.getLogger(__name__)


class SpoolUnwritable(Exception):
    """The spool could not be written (the sqlite3 or OS error is the cause)."""

    def __init__(self, path: Path, cause: Exception) -> None:
        super().__init__(f"spool {path} could not be written: {cause}")


@dataclass(frozen=True)
class SpooledCall:
    id: int
    method: str  # Commit | Release | ChargeUsage (another client version may have written others)
    request: bytes  # the serialized request: sent again as it was
    spooled_at: float
    attempts: int


class CommitSpool:
    def __init__(self, path: str | Path, *, max_bytes: int | None = None) -> None:
        """`max_bytes`: the most the file may hold (sqlite's max_page_count); beyond, calls are
        sent without being spooled, as when the disk is full. None: as much as the disk holds."""
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._db: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # (device, inode) of the file `_db` has open
        self._depth = 0  # rows in `spooled`
        self._set_aside = 0  # rows in `set_aside`
        self._skipped: set[int] = set()  # unreadable rows that could not be moved aside
        try:
            self._connection()
        except (sqlite3.Error, OSError) as error:  # tried again at the next add
            self._trouble("open", f"could not be opened ({error}): calls are sent without it until it can")

    def add(self, method: str, request: bytes) -> int:
        try:
            cursor = self._durable().execute(
                "INSERT INTO spooled (method, request, spooled_at) VALUES (?, ?, ?)", (method, request, time.time())
            )
        except (sqlite3.Error, OSError) as error:
            SPOOL_ERRORS.labels(str(self.path), "add").inc()
            raise SpoolUnwritable(self.path, error) from error
        assert cursor.lastrowid is not None
        self._depth += 1
        self._publish()
        return cursor.lastrowid

    def answered(self, call_id: int) -> bool:
        """Forget a call meter answered; False (logged, counted) when that could not be written:
        the row stays, and is sent again."""
        try:
            deleted = self._connection().execute("DELETE FROM spooled WHERE id = ?", (call_id,)).rowcount
        except (sqlite3.Error, OSError) as error:
            self._trouble("answered", f"could not record the answer to call {call_id} ({error}): sent again later")
            return False
        self._depth -= deleted
        self._publish()
        return True

    def failed(self, call_id: int, error: str) -> None:
        try:
            self._connection().execute(
                "UPDATE spooled SET attempts = attempts + 1, last_error = ? WHERE id = ?", (error[:500], call_id)
            )
        except (sqlite3.Error, OSError) as trouble:
            self._trouble("failed", f"could not record a failed attempt of call {call_id} ({trouble})")

    def oldest(self, limit: int = 100, after_id: int = 0) -> list[SpooledCall]:
        """The next calls to send, oldest first; none when the spool cannot be read (logged,
        counted: the caller tries again later)."""
        try:
            rows = (
                self._connection()
                .execute(
                    "SELECT id, method, request, spooled_at, attempts FROM spooled WHERE id > ? ORDER BY id LIMIT ?",
                    (after_id, limit),
                )
                .fetchall()
            )
        except (sqlite3.Error, OSError) as error:
            self._trouble("read", f"could not be read ({error})")
            return []
        calls = [SpooledCall(*row) for row in rows]
        return [call for call in calls if call.id not in self._skipped]

    def set_aside(self, call: SpooledCall, reason: str) -> None:
        """Move a row that cannot be read as a call to `set_aside`, with why; if even that
        cannot be written, skip it in this process (and set it aside on a later start)."""
        log.warning("spool %s: call %d set aside (%s); see the set_aside table", self.path, call.id, reason)
        try:
            self._move_aside(call.id, reason[:500])
        except (sqlite3.Error, OSError) as error:
            self._trouble("set_aside", f"could not set call {call.id} aside ({error}): skipped in this process")
            self._skipped.add(call.id)
        else:
            self._depth -= 1
        self._set_aside += 1
        self._publish()

    @property
    def depth(self) -> int:
        """Calls waiting to be sent (rows set aside are not)."""
        return self._depth - len(self._skipped)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._skipped.clear()

    def _durable(self) -> sqlite3.Connection:
        """The connection, if what it writes is in the file at `path`. A file removed (its
        folder deleted, say) or replaced while open still takes writes, that no restart would
        see: opened again when it holds nothing, refused while it still holds calls (they are
        sent from the open file)."""
        db = self._connection()
        if _file_at(self.path) == self._file:
            return db
        if self._depth:
            raise OSError(f"removed or replaced while open; its {self._depth} calls are sent from the open file")
        self.close()
        return self._connection()

    def _connection(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_SECONDS)
        try:
            if self.max_bytes is not None:
                page_size = db.execute("PRAGMA page_size").fetchone()[0]
                db.execute(f"PRAGMA max_page_count = {max(1, self.max_bytes // page_size)}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SPOOLED)
            db.execute(_SET_ASIDE)
            self._depth = db.execute("SELECT count(*) FROM spooled").fetchone()[0]
            self._set_aside = db.execute("SELECT count(*) FROM set_aside").fetchone()[0]
        except BaseException:
            db.close()
            raise
        self._db, self._file = db, _file_at(self.path)
        self._publish()
        return db

    def _move_aside(self, call_id: int, reason: str) -> None:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO set_aside (id, method, request, spooled_at, attempts, last_error, reason, set_aside_at) "
                "SELECT id, method, request, spooled_at, attempts, last_error, ?, ? FROM spooled WHERE id = ?",
                (reason, time.time(), call_id),
            )
            db.execute("DELETE FROM spooled WHERE id = ?", (call_id,))
            db.execute("COMMIT")
        finally:
            if db.in_transaction:  # not committed
                db.execute("ROLLBACK")

    def _trouble(self, step: str, what: str) -> None:
        SPOOL_ERRORS.labels(str(self.path), step).inc()
        log.error("spool %s %s", self.path, what)

    def _publish(self) -> None:
        SPOOL_DEPTH.labels(str(self.path)).set(self.depth)
        SPOOL_SET_ASIDE.labels(str(self.path)).set(self._set_aside)


def _file_at(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino
