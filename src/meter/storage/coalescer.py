"""Coalescing: the calls that arrive while the database is busy with earlier ones go together.

A call that finds one of the `in_flight` slots free goes at once, alone, by the single-call path:
no timer, no added wait, so at light load nothing changes. The calls that arrive while every slot
is taken wait together, and as soon as a slot is free they leave in it as one batch, whatever
their number: batches grow with the load and shrink back to one by themselves (TigerBeetle's
clients batch the same way). One round trip, one transaction and one commit to disk then serve the
whole batch.

A batch that fails as a whole with an error that one of its calls may have caused (a value the
database refuses, a lock waited for past lock_timeout, the batch past statement_timeout) is sent
again call by call, so that one call's error is never its neighbours'; refusals are answers, not
errors, and never need this. A database that cannot be reached fails the batch that met it (each
call would meet it too). A call whose caller gave up (cancelled) before its batch left is not sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from meter.domain.errors import StorageUnavailable
from meter.storage.engine import sqlstate

# lock_not_available (lock_timeout), query_canceled (statement_timeout): one call's wait, perhaps.
_ONE_CALLS_WAIT = frozenset({"55P03", "57014"})

Call = TypeVar("Call")
Answer = TypeVar("Answer")


class Coalescer(Generic[Call, Answer]):
    def __init__(
        self,
        alone: Callable[[Call], Awaitable[Answer]],
        together: Callable[[list[Call]], Awaitable[list[Answer]]],
        *,
        in_flight: int,
        sent: Callable[[int], None] = lambda size: None,
    ) -> None:
        """`alone`: one call's statement; `together`: a batch's, its answers in the batch's order;
        `sent`: told the size of every statement sent (1 for a call alone), for the metrics."""
        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        self._alone = alone
        self._together = together
        self._in_flight = in_flight
        self._sent = sent
        self._busy = 0
        self._waiting: list[tuple[Call, asyncio.Future[Answer]]] = []
        self._batches: set[asyncio.Task[None]] = set()

    async def __call__(self, call: Call) -> Answer:
        if self._busy < self._in_flight:
            self._busy += 1
            try:
                self._sent(1)
                return await self._alone(call)
            finally:
                self._slot_freed()
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.append((call, answer))
        return await answer

    def _slot_freed(self) -> None:
        """The calls waiting (those whose callers still wait) leave now, in the slot just freed."""
        batch = [(call, answer) for call, answer in self._waiting if not answer.done()]
        self._waiting = []
        if not batch:
            self._busy -= 1
            return
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._batches.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(self._batches.discard)

    async def _send(self, batch: list[tuple[Call, asyncio.Future[Answer]]]) -> None:
        try:
            await self._answer_batch(batch)
        except BaseException:
            # Cancelled (shutting down): nobody is left to answer these calls, nor those waiting.
            for _, answer in batch + self._waiting:
                answer.cancel()
            self._waiting = []
            self._busy -= 1
            raise
        self._slot_freed()

    async def _answer_batch(self, batch: list[tuple[Call, asyncio.Future[Answer]]]) -> None:
        self._sent(len(batch))
        if len(batch) == 1:
            await _answer(batch[0][1], self._alone(batch[0][0]))
            return
        try:
            answers = await self._together([call for call, _ in batch])
        except Exception as exc:
            if isinstance(exc, StorageUnavailable) and not _one_calls_wait(exc):
                for _, answer in batch:
                    _settle(answer, exc)
                return
            for call, answer in batch:
                if not answer.done():
                    await _answer(answer, self._alone(call))
            return
        for (_, answer), value in zip(batch, answers, strict=True):
            if not answer.done():
                answer.set_result(value)


def _one_calls_wait(exc: StorageUnavailable) -> bool:
    return exc.__cause__ is not None and sqlstate(exc.__cause__) in _ONE_CALLS_WAIT


async def _answer(answer: asyncio.Future[Answer], work: Awaitable[Answer]) -> None:
    try:
        value = await work
    except Exception as exc:
        _settle(answer, exc)
    else:
        if not answer.done():
            answer.set_result(value)


def _settle(answer: asyncio.Future[Answer], exc: Exception) -> None:
    if not answer.done():
        answer.set_exception(exc)
