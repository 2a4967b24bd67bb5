"""Graceful stop, done by meter rather than left to gRPC: calls in flight are counted, new ones
are refused with UNAVAILABLE SHUTTING_DOWN (nothing started, so a retry elsewhere is safe), and
the server stops only once the calls in flight have finished or the grace is spent.

grpc.aio's own `server.stop(grace)` was seen cancelling calls whose handlers were awaiting the
database (CANCELLED at the first millisecond of the stop, under load): by the time it runs here,
no handler is busy any more.
"""

from __future__ import annotations

import asyncio

from meter.domain.errors import ShuttingDown


class Drain:
    def __init__(self) -> None:
        self.in_flight = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        # Set when the drain starts: streams (WatchEvents) end then, rather than hold the stop;
        # they are not counted in flight, their readers resume from their last sequence.
        self.stopping = asyncio.Event()

    def __enter__(self) -> None:
        """Around one RPC's handler (`with drain:`); raises ShuttingDown when the server is
        stopping. A plain context manager: it runs on every call of the hot path."""
        if self.draining:
            raise ShuttingDown()
        self.in_flight += 1
        self._idle.clear()

    def __exit__(self, *exc: object) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self._idle.set()

    async def start(self, grace_seconds: float) -> bool:
        """Refuse new calls and wait for the ones in flight; False if the grace ran out first."""
        self.draining = True
        self.stopping.set()
        try:
            await asyncio.wait_for(self._idle.wait(), grace_seconds)
        except TimeoutError:
            return False
        return True
