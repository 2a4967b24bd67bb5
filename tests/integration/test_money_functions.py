"""The small SQL functions the hot path and the credits are built from, called directly on a real
account: spreading a pool over its rows, taking allowance first, paying debt first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from meter.v1 import meter_pb2 as pb
from support import RunningMeter, funded_account


async def rows(connection: AsyncConnection, account: str, pool: str) -> list[int]:
    result = await connection.execute(
        text("SELECT available FROM buckets WHERE account_id = :a AND pool = :p ORDER BY bucket"),
        {"a": account, "p": pool},
    )
    return list(result.scalars())


async def call(connection: AsyncConnection, sql: str, **params: Any) -> Any:
    return (await connection.execute(text(sql), params)).one()


async def test_spread_gives_the_remainder_to_the_lowest_rows(meters: Any, engine: AsyncEngine) -> None:
    meter: RunningMeter = await meters(buckets=4)
    account = await funded_account(meter.stub, 0)
    async with engine.connect() as connection:
        await call(connection, "SELECT meter_spread(:a, 'purchased', 10)", a=account)
        assert await rows(connection, account, "purchased") == [3, 3, 2, 2]
        await call(connection, "SELECT meter_spread(:a, 'purchased', 3)", a=account)
        assert await rows(connection, account, "purchased") == [1, 1, 1, 0]
        assert await rows(connection, account, "allowance") == [0, 0, 0, 0]  # one pool only
        await connection.rollback()


async def test_take_draws_allowance_first_and_names_the_shortfall(meters: Any, engine: AsyncEngine) -> None:
    meter: RunningMeter = await meters(buckets=2)
    account = await funded_account(meter.stub, 100)
    await meter.stub.Adjust(
        pb.AdjustRequest(account_id=account, pool=pb.POOL_ALLOWANCE, delta=50, reason="t", request_id="a1")
    )
    async with engine.connect() as connection:
        taken = await call(connection, "SELECT * FROM meter_take(:a, 120, now())", a=account)
        assert tuple(taken) == (["allowance", "purchased"], [50, 70], 0)
        assert await rows(connection, account, "purchased") == [15, 15]
        taken = await call(connection, "SELECT * FROM meter_take(:a, 40, now())", a=account)
        assert tuple(taken) == (["purchased"], [30], 10)  # what no pool had
        await connection.rollback()


async def test_incoming_tokens_pay_the_debt_first(meters: Any, engine: AsyncEngine) -> None:
    meter: RunningMeter = await meters(buckets=2)
    account = await funded_account(meter.stub, 0)
    async with engine.connect() as connection:
        await connection.execute(text("UPDATE accounts SET debt = 300 WHERE account_id = :a"), {"a": account})
        pay = (
            "SELECT * FROM meter_pay_debt(:a, ARRAY['allowance', 'purchased'], CAST(ARRAY[:x, :y] AS bigint[]), "
            "'r', NULL, now(), 't')"
        )
        left = await call(connection, pay, a=account, x=100, y=500)
        assert tuple(left) == ([0, 300], 0)  # in the order given: 100 of the allowance, 200 of the purchased
        debt = await call(connection, "SELECT debt FROM accounts WHERE account_id = :a", a=account)
        assert debt[0] == 0
        await connection.execute(text("UPDATE accounts SET debt = 250 WHERE account_id = :a"), {"a": account})
        left = await call(connection, pay, a=account, x=100, y=50)
        assert tuple(left) == ([0, 0], 100)  # what comes in does not cover it: the debt left is returned
        await connection.execute(text("UPDATE accounts SET debt = 30 WHERE account_id = :a"), {"a": account})
        paid = await call(
            connection, "SELECT meter_credit(:a, 'adjustment', 'purchased', 100, 'r2', 'n', now(), 'test')", a=account
        )
        assert paid[0] == 30
        assert await rows(connection, account, "purchased") == [35, 35]
        await connection.rollback()
