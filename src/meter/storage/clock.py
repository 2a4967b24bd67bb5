"""The one clock for holds, expiry and periods: the database's now(), so that replicas on hosts
with skewed clocks agree. Tests move it with an offset instead of sleeping."""

from __future__ import annotations

from datetime import timedelta


class DatabaseClock:
    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    @property
    def offset_seconds(self) -> float:
        return self.offset.total_seconds()

    def advance(self, delta: timedelta) -> None:
        self.offset += delta
