"""The coalescer's promises, on plain coroutines standing for the two statements: a call that
finds a slot free goes alone at once; the calls that arrive meanwhile go together in the next
slot, each with its own answer; one call's error is never its neighbours'; an unavailable database
fails the batch it met and not the next; a caller that gave up is not sent."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from meter.domain.errors import StorageUnavailable
from meter.storage.coalescer import Coalescer


class Statements:
    """`alone` and `together` as the coalescer calls them, recording what was sent; each waits for
    `release` so that a test decides when the database "answers"."""

    def __init__(self) -> None:
        self.sent: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.refuse: set[int] = set()  # calls whose statement fails, alone or in a batch
        self.unavailable: BaseException | None = None  # the driver's error behind StorageUnavailable

    async def alone(self, call: int) -> str:
        self.sent.append([call])
        await self.release.wait()
        if call in self.refuse:
            raise ValueError(f"call {call} is refused")
        return f"answer {call}"

    async def together(self, calls: list[int]) -> list[str]:
        self.sent.append(list(calls))
        await self.release.wait()
        if self.unavailable is not None:
            raise StorageUnavailable(type(self.unavailable).__name__) from self.unavailable
        if self.refuse & set(calls):
            raise ValueError("one call of the batch is refused")
        return [f"answer {call}" for call in calls]


async def _until(condition, within: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not reached in time"
        await asyncio.sleep(0)


async def test_at_light_load_every_call_goes_alone_without_waiting() -> None:
    statements, sizes = Statements(), []
    coalescer = Coalescer(statements.alone, statements.together, in_flight=1, sent=sizes.append)
    assert [await coalescer(n) for n in range(3)] == ["answer 0", "answer 1", "answer 2"]
    assert statements.sent == [[0], [1], [2]]
    assert sizes == [1, 1, 1]


async def test_calls_arriving_while_one_is_in_flight_go_together_each_with_its_answer() -> None:
    statements, sizes = Statements(), []
    coalescer = Coalescer(statements.alone, statements.together, in_flight=1, sent=sizes.append)
    statements.release.clear()
    first = asyncio.ensure_future(coalescer(0))
    await _until(lambda: statements.sent == [[0]])
    rest = [asyncio.ensure_future(coalescer(n)) for n in range(1, 6)]
    await asyncio.sleep(0)
    assert statements.sent == [[0]]  # the others wait for the slot
    statements.release.set()
    assert await first == "answer 0"
    assert await asyncio.gather(*rest) == [f"answer {n}" for n in range(1, 6)]
    assert statements.sent == [[0], [1, 2, 3, 4, 5]]
    assert sizes == [1, 5]


async def test_a_batch_that_fails_is_answered_call_by_call_so_only_the_failing_call_fails() -> None:
    statements = Statements()
    statements.refuse = {3}
    coalescer = Coalescer(statements.alone, statements.together, in_flight=1)
    statements.release.clear()
    first = asyncio.ensure_future(coalescer(0))
    await _until(lambda: statements.sent == [[0]])
    rest = [asyncio.ensure_future(coalescer(n)) for n in range(1, 5)]
    await asyncio.sleep(0)
    statements.release.set()
    await first
    answers = await asyncio.gather(*rest, return_exceptions=True)
    assert answers[0] == "answer 1" and answers[1] == "answer 2" and answers[3] == "answer 4"
    assert isinstance(answers[2], ValueError)
    assert statements.sent == [[0], [1, 2, 3, 4], [1], [2], [3], [4]]


async def test_an_unavailable_database_fails_the_batch_it_met_and_the_next_one_runs() -> None:
    statements = Statements()
    coalescer = Coalescer(statements.alone, statements.together, in_flight=1)
    statements.release.clear()
    statements.unavailable = asyncpg.CannotConnectNowError("the database system is starting up")
    first = asyncio.ensure_future(coalescer(0))
    await _until(lambda: statements.sent == [[0]])
    batch = [asyncio.ensure_future(coalescer(n)) for n in (1, 2)]
    await asyncio.sleep(0)
    statements.release.set()
    await first
    for outcome in await asyncio.gather(*batch, return_exceptions=True):
        assert isinstance(outcome, StorageUnavailable)
    assert statements.sent == [[0], [1, 2]]  # not sent again call by call: the database is down
    statements.unavailable = None
    assert await coalescer(3) == "answer 3"  # the slot was freed


async def test_a_batch_past_a_timeout_is_answered_call_by_call() -> None:
    """lock_timeout or statement_timeout on a batch may be one call's wait: each call alone gets
    its own verdict."""
    statements = Statements()
    coalescer = Coalescer(statements.alone, statements.together, in_flight=1)
    statements.release.clear()
    statements.unavailable = asyncpg.LockNotAvailableError("canceling statement due to lock timeout")
    first = asyncio.ensure_future(coalescer(0))
    await _until(lambda: statements.sent == [[0]])
    batch = [asyncio.ensure_future(coalescer(n)) for n in (1, 2)]
    await asyncio.sleep(0)
    statements.release.set()
    await first
    assert await asyncio.gather(*batch) == ["answer 1", "answer 2"]
    assert statements.sent == [[0], [1, 2], [1], [2]]


async def test_a_caller_that_gave_up_before_its_batch_left_is_not_sent() -> None:
    statements = Statements()
    coalescer = Coalescer(statements.alone, statements.together, in_flight=1)
    statements.release.clear()
    first = asyncio.ensure_future(coalescer(0))
    await _until(lambda: statements.sent == [[0]])
    waiting = [asyncio.ensure_future(coalescer(n)) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    waiting[1].cancel()
    statements.release.set()
    await first
    assert await waiting[0] == "answer 1" and await waiting[2] == "answer 3"
    with pytest.raises(asyncio.CancelledError):
        await waiting[1]
    assert statements.sent == [[0], [1, 3]]


async def test_in_flight_statements_never_exceed_the_slots() -> None:
    statements, sizes = Statements(), []
    coalescer = Coalescer(statements.alone, statements.together, in_flight=2, sent=sizes.append)
    statements.release.clear()
    calls = [asyncio.ensure_future(coalescer(n)) for n in range(7)]
    await _until(lambda: len(statements.sent) == 2)
    await asyncio.sleep(0)
    assert statements.sent == [[0], [1]]
    statements.release.set()
    assert await asyncio.gather(*calls) == [f"answer {n}" for n in range(7)]
    assert sizes[:2] == [1, 1] and sum(sizes) == 7
    with pytest.raises(ValueError):
        Coalescer(statements.alone, statements.together, in_flight=0)
