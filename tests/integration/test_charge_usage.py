"""ChargeUsage: a call that had no hold (let through while meter could not be reached) is charged
once by its request_id, from what is available, debt for the rest, never refused for lack of
tokens; it is a committed call in the ledger and the day's usage like any other."""

from __future__ import annotations

import grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.client import MeterClient
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, expect_error, funded_account, ledger, new_id, reserve_request


def charge(account: str, request_id: str, **fields: object) -> pb.ChargeUsageRequest:
    values: dict[str, object] = {"model": "basic", "input_tokens": 300, "output_tokens": 200}
    values.update(fields)
    return pb.ChargeUsageRequest(account_id=account, request_id=request_id, **values)  # type: ignore[arg-type]


async def test_a_call_without_a_hold_is_charged_once_and_becomes_debt_where_nothing_pays(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    account = await funded_account(meter.stub, 800)
    first = await meter.stub.ChargeUsage(charge(account, "call-1", labels={"team": "search"}))
    assert (first.charged_tokens, first.unbilled_tokens, first.balance.purchased_remaining) == (500, 0, 300)
    assert first.reservation_id.startswith(f"{account}/")
    again = await meter.stub.ChargeUsage(charge(account, "call-1", labels={"team": "search"}))
    assert (again.reservation_id, again.charged_tokens, again.balance.purchased_remaining) == (
        first.reservation_id, 500, 300,
    )  # fmt: skip
    await expect_error(
        meter.stub.ChargeUsage(charge(account, "call-1", output_tokens=1)),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    # The request_id of a Reserve is the same key: it cannot be charged as another call (here another
    # model; the same call is that hold's Commit, below).
    hold = await meter.stub.Reserve(pb.ReserveRequest(account_id=account, request_id="call-3", model="basic",
                                                      input_tokens=1, max_output_tokens=1))  # fmt: skip
    info = await expect_error(
        meter.stub.ChargeUsage(charge(account, "call-3", model="gpt-4o")),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert info.metadata["field"] == "model"
    await meter.stub.Release(pb.ReleaseRequest(reservation_id=hold.reservation_id))
    over = await meter.stub.ChargeUsage(charge(account, "call-2"))  # 500 more than the 300 left
    assert (over.charged_tokens, over.unbilled_tokens, over.balance.debt) == (500, 200, 200)
    assert sum(e["amount"] for e in await ledger(engine, account) if e["kind"] == "usage") == -1000
    async with engine.connect() as connection:
        query = text("SELECT sum(requests), sum(charged_tokens) FROM usage_daily WHERE account_id = :a")
        assert tuple((await connection.execute(query, {"a": account})).one()) == (2, 1000)
    await expect_error(
        meter.stub.ChargeUsage(charge(new_id(), "call-1")), grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND"
    )


async def test_the_client_charges_usage(meter: RunningMeter) -> None:
    account = await funded_account(meter.stub, 1000)
    async with MeterClient(meter.address) as client:
        charged = await client.charge_usage(
            account_id=account, request_id="c1", model="basic", input_tokens=10, output_tokens=5
        )
    assert charged.charged_tokens == 15
    assert (await balance(meter.stub, account)).purchased_remaining == 985


async def test_a_call_whose_reserve_landed_unseen_is_that_holds_commit(meter: RunningMeter) -> None:
    """A proxy that never had its Reserve's answer lets the call through, then sends ChargeUsage
    with the same request_id: the hold the Reserve placed is committed with the usage, once."""
    account = await funded_account(meter.stub, 1_000)
    hold = await meter.stub.Reserve(reserve_request(account, request_id="call-9", labels={"team": "a"}))
    request = charge(account, "call-9", labels={"team": "a"})
    first = await meter.stub.ChargeUsage(request)
    assert first.reservation_id == hold.reservation_id
    # basic: 300 + 200 charged, the hold's 100 and 400 more from what is available.
    assert (first.charged_tokens, first.balance.held, first.balance.purchased_remaining) == (500, 0, 500)
    again = await meter.stub.ChargeUsage(request)
    assert (again.reservation_id, again.charged_tokens, again.balance.purchased_remaining) == (
        hold.reservation_id,
        500,
        500,
    )
    await expect_error(
        meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=1, output_tokens=1)),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
