"""What the storage runners try again: serialization failures and deadlocks, as many times as they
are told to and no more; anything else once."""

from __future__ import annotations

import asyncpg
import pytest

from meter.storage.engine import with_retries


async def test_a_serialization_failure_is_retried_and_then_succeeds() -> None:
    calls = []

    async def once() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise asyncpg.SerializationError("could not serialize access")
        return "done"

    assert await with_retries(once, 8) == "done"
    assert len(calls) == 3


async def test_a_failure_that_never_clears_is_tried_exactly_the_given_number_of_times() -> None:
    calls = []

    async def once() -> str:
        calls.append(1)
        raise asyncpg.DeadlockDetectedError("deadlock detected")

    with pytest.raises(asyncpg.DeadlockDetectedError):
        await with_retries(once, 4)
    assert len(calls) == 4


async def test_a_failure_not_worth_a_retry_is_tried_once() -> None:
    calls = []

    async def once() -> str:
        calls.append(1)
        raise asyncpg.UniqueViolationError("duplicate key")

    with pytest.raises(asyncpg.UniqueViolationError):
        await with_retries(once, 4)
    assert len(calls) == 1
