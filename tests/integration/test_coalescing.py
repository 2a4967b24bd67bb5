"""Coalescing through the real server (METER_COALESCE=1, the default): calls that arrive together
go to the database as one statement, and each still gets exactly the answer it would have had
alone: a refusal or an unknown account among them fails nobody else, a request id sent twice in one
batch is placed once and answered as a replay, a Commit sent twice is charged once."""

from __future__ import annotations

import asyncio

import grpc
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.storage.audit import audit
from meter.v1 import meter_pb2 as pb
from support import RunningMeter, balance, funded_account, ledger, reserve_request

HOLD = 100  # reserve_request's 50 + 50 on the basic model


def _statements(call: str) -> tuple[float, float]:
    """(calls sent, statements that carried them) so far, for "reserve" or "commit"."""
    labels = {"call": call}
    calls = REGISTRY.get_sample_value("meter_coalesced_calls_sum", labels) or 0.0
    statements = REGISTRY.get_sample_value("meter_coalesced_calls_count", labels) or 0.0
    return calls, statements


async def _together(*calls):  # type: ignore[no-untyped-def]
    return await asyncio.gather(*calls, return_exceptions=True)


async def test_calls_that_arrive_together_share_a_statement_and_keep_their_own_answers(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    rich = await funded_account(meter.stub, 10 * HOLD)
    poor = await funded_account(meter.stub, HOLD)
    twice = reserve_request(rich, request_id="the-same-request")
    sent_before, statements_before = _statements("reserve")
    answers = await _together(
        *(meter.stub.Reserve(reserve_request(rich)) for _ in range(9)),
        meter.stub.Reserve(twice),
        meter.stub.Reserve(twice),
        *(meter.stub.Reserve(reserve_request(poor)) for _ in range(3)),
        meter.stub.Reserve(reserve_request("acct-nobody-has")),
    )
    sent, statements = _statements("reserve")
    assert sent - sent_before == 15
    assert statements - statements_before < 15, "no two calls shared a statement"

    placed_rich = answers[:11]
    assert all(isinstance(a, pb.ReserveResponse) for a in placed_rich)
    assert placed_rich[9].reservation_id == placed_rich[10].reservation_id  # the replay: one hold
    assert len({a.reservation_id for a in placed_rich}) == 10
    poor_answers = answers[11:14]
    assert sum(isinstance(a, pb.ReserveResponse) for a in poor_answers) == 1
    refused = [a for a in poor_answers if isinstance(a, grpc.aio.AioRpcError)]
    assert [a.code() for a in refused] == [grpc.StatusCode.FAILED_PRECONDITION] * 2
    assert isinstance(answers[14], grpc.aio.AioRpcError)
    assert answers[14].code() == grpc.StatusCode.NOT_FOUND
    assert (await balance(meter.stub, rich)).held == 10 * HOLD
    assert (await balance(meter.stub, rich)).purchased_remaining == 0
    assert (await balance(meter.stub, poor)).held == HOLD

    holds = [a.reservation_id for a in placed_rich[:10]]
    sent_before, statements_before = _statements("commit")
    commits = await _together(
        *(meter.stub.Commit(pb.CommitRequest(reservation_id=r, input_tokens=20, output_tokens=10)) for r in holds),
        meter.stub.Commit(pb.CommitRequest(reservation_id=holds[0], input_tokens=20, output_tokens=10)),
        meter.stub.Commit(pb.CommitRequest(reservation_id=holds[1], input_tokens=99, output_tokens=10)),
    )
    sent, statements = _statements("commit")
    assert sent - sent_before == 12
    assert statements - statements_before < 12, "no two calls shared a statement"
    assert all(isinstance(c, pb.CommitResponse) for c in commits[:11])
    assert {c.charged_tokens for c in commits[:11]} == {30}
    assert isinstance(commits[11], grpc.aio.AioRpcError)  # the same hold, other usage: refused
    assert commits[11].code() == grpc.StatusCode.ALREADY_EXISTS
    after = await balance(meter.stub, rich)
    assert after.held == 0
    assert after.used_this_period == 10 * 30
    assert after.purchased_remaining == 10 * HOLD - 10 * 30
    usage = [row for row in await ledger(engine, rich) if row["kind"] == "usage"]
    assert sorted(row["reservation_id"] for row in usage) == sorted(holds)  # each charged once
    assert (await audit(engine, rich)).clean and (await audit(engine, poor)).clean


async def test_without_coalescing_every_call_is_its_own_statement(meters, engine: AsyncEngine) -> None:  # type: ignore[no-untyped-def]
    meter = await meters(coalesce=0)
    account = await funded_account(meter.stub, 10 * HOLD)
    sent_before, statements_before = _statements("reserve")
    answers = await _together(*(meter.stub.Reserve(reserve_request(account)) for _ in range(10)))
    assert all(isinstance(a, pb.ReserveResponse) for a in answers)
    assert _statements("reserve") == (sent_before, statements_before)  # not counted: nothing coalesced
    assert (await balance(meter.stub, account)).held == 10 * HOLD
