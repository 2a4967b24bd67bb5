"""The role meter serves with may not write the ledger, the bucket rows, the holds or an account's
money but through meter's SQL functions: `meter migrate` with METER_SERVICE_ROLE grants it exactly
what serving needs (meter_grant_service_role), the functions that move tokens run as the owner
(SECURITY DEFINER), and a direct write is refused by PostgreSQL itself. A server connected as that
role serves Reserve, Commit, Adjust of both signs, SetPlan and GetBalance as usual."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from sqlalchemy import make_url

from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc
from meterlab.testbed import ServerProcess
from support import error_info, new_id, run_cli


@pytest.fixture
async def served_by_a_role(database_url: str) -> AsyncIterator[tuple[str, str, str]]:
    """(owner's URL, the service role's URL, the role) of a database of their own."""
    url = make_url(database_url)
    admin_url = url.set(drivername="postgresql").render_as_string(hide_password=False)
    suffix = uuid.uuid4().hex[:8]
    name, role = f"meter_role_{suffix}", f"meter_app_{suffix}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.execute(f'CREATE ROLE "{role}" LOGIN')
    owner = url.set(database=name).render_as_string(hide_password=False)
    served = url.set(database=name, username=role, password=None).render_as_string(hide_password=False)
    try:
        yield owner, served, role
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_the_service_role_writes_money_only_through_the_functions(
    served_by_a_role: tuple[str, str, str],
) -> None:
    owner, served, role = served_by_a_role
    code, _, err = await run_cli("migrate", env={"METER_DATABASE_URL": owner, "METER_SERVICE_ROLE": role})
    assert code == 0, err
    server = ServerProcess(served, {"METER_MIGRATE_ON_START": "false"})
    try:
        await server.ready()
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = meter_pb2_grpc.MeterServiceStub(channel)
            account = new_id()
            await stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))
            await stub.SetPlan(pb.SetPlanRequest(account_id=account, plan_id="starter"))  # an existing account's
            granted = await stub.Grant(
                pb.GrantRequest(account_id=account, request_id="g1", tokens=10, reason="welcome", priority=5)
            )
            revoked = await stub.RevokeGrant(pb.RevokeGrantRequest(account_id=account, grant_id=granted.grant.grant_id))
            assert revoked.revoked_tokens == 10
            await stub.Adjust(
                pb.AdjustRequest(
                    account_id=account, pool=pb.POOL_PURCHASED, delta=5000, reason="bonus", request_id="a1"
                )
            )
            await stub.Adjust(
                pb.AdjustRequest(account_id=account, pool=pb.POOL_PURCHASED, delta=-2000, reason="fix", request_id="a2")
            )
            held = await stub.Reserve(
                pb.ReserveRequest(
                    account_id=account, request_id="r1", model="basic", input_tokens=100, max_output_tokens=100
                )
            )
            await stub.Commit(pb.CommitRequest(reservation_id=held.reservation_id, input_tokens=100, output_tokens=50))
            balance = (await stub.GetBalance(pb.GetBalanceRequest(account_id=account))).balance
            assert (balance.allowance_remaining, balance.purchased_remaining) == (50_000 - 150, 3000)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Adjust(
                    pb.AdjustRequest(
                        account_id=account, pool=pb.POOL_PURCHASED, delta=-9000, reason="too much", request_id="a3"
                    )
                )
            assert error_info(refused.value).reason == "INSUFFICIENT_TOKENS"
    finally:
        assert await asyncio.to_thread(server.stop) == 0

    connection = await asyncpg.connect(served)
    try:
        for statement in (
            "INSERT INTO ledger_entries (account_id, created_at, caller, kind, pool, amount) "
            f"VALUES ('{account}', now(), 'me', 'adjustment', 'purchased', 1000000)",
            f"UPDATE buckets SET available = available + 1000000 WHERE account_id = '{account}'",
            f"UPDATE accounts SET debt = 0 WHERE account_id = '{account}'",
            f"UPDATE accounts SET allowance_total = 1 WHERE account_id = '{account}'",
            f"UPDATE holds SET held = 0 WHERE account_id = '{account}'",
            f"DELETE FROM ledger_entries WHERE account_id = '{account}'",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(statement)
        # What the role may write: an account's plan, and Python's own tables.
        await connection.execute(f"UPDATE accounts SET plan_id = 'starter' WHERE account_id = '{account}'")
        entries = await connection.fetchval(f"SELECT count(*) FROM ledger_entries WHERE account_id = '{account}'")
        assert entries == 6  # the allowance, the grant and its revocation, two adjustments, the usage: none forged
    finally:
        await connection.close()
