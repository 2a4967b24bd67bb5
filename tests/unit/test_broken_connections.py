"""A connection whose server went away mid-statement (asyncpg raises InternalClientError, see
MagicStack/asyncpg #1069) is a storage outage to the caller, never an internal error."""

from __future__ import annotations

import asyncpg
import pytest

from meter.domain.errors import StorageUnavailable
from meter.storage.engine import with_retries


async def test_a_protocol_error_after_a_lost_server_is_storage_unavailable() -> None:
    async def once() -> None:
        raise asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")

    with pytest.raises(StorageUnavailable):
        await with_retries(once, 8)
