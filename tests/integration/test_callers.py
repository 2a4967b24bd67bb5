"""Callers and permissions through the real server: every method refused without a token, with a
wrong one and to a caller whose role lacks it, and admitted to one whose role has it; a refusal
changes nothing; every ledger entry names its caller; request ids come back on every answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from conftest import StartMeter
from google.protobuf.message import Message
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe_events import deliver, paid_checkout

from meter.client import MeterClient
from meter.domain.callers import ROLES, hash_token, new_token
from meter.grpc.server import METHODS
from meter.v1 import meter_pb2 as pb
from support import (
    RunningMeter,
    error_info,
    expect_error,
    fingerprint,
    first_answer,
    funded_account,
    new_id,
    pack_purchase,
    reserve_request,
    run_cli,
)


@dataclass(frozen=True)
class Credential:
    name: str
    role: str
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    def may_call(self, method: str) -> bool:
        allowed = ROLES[self.role]
        return allowed is None or method in allowed


PROXY = Credential("proxy-eu", "proxy", new_token())
BILLING = Credential("stripe-billing", "billing", new_token())
OPERATOR = Credential("ops", "operator", new_token())
CREDENTIALS = (PROXY, BILLING, OPERATOR)
CALLERS_TOML = "\n".join(
    f'[[caller]]\nname = "{c.name}"\nrole = "{c.role}"\ntoken_sha256 = "{hash_token(c.token)}"\n' for c in CREDENTIALS
)


async def start_with_callers(meters: StartMeter, **settings: Any) -> RunningMeter:
    return await meters(callers_toml=CALLERS_TOML, webhook_token=BILLING.token, **settings)


async def call(meter: RunningMeter, method: str, request: Message, credential: Credential | None) -> Any:
    rpc = getattr(meter.stub, method)(request, metadata=credential.metadata if credential else None)
    return await first_answer(rpc)


def requests(account: str, reservation: str) -> dict[str, Message]:
    """A request per method that changes something when admitted (reads: one that finds data);
    methods not named here get an empty request (a new RPC is covered without editing this)."""
    named: dict[str, Message] = {
        "Reserve": reserve_request(account),
        "Commit": pb.CommitRequest(reservation_id=reservation, input_tokens=10, output_tokens=10),
        "Release": pb.ReleaseRequest(reservation_id=reservation),
        "ExtendReservation": pb.ExtendReservationRequest(reservation_id=reservation, ttl_seconds=900),
        "GetBalance": pb.GetBalanceRequest(account_id=account),
        "CreditPurchase": pack_purchase(account),
        "SetPlan": pb.SetPlanRequest(account_id=account, plan_id="pro"),
        "Adjust": pb.AdjustRequest(
            account_id=account, pool=pb.POOL_PURCHASED, delta=5, reason="test", request_id=new_id("adj")
        ),
        "ListLedgerEntries": pb.ListLedgerEntriesRequest(account_id=account),
        "ListOpenReservations": pb.ListOpenReservationsRequest(account_id=account),
    }
    service = pb.DESCRIPTOR.services_by_name["MeterService"]
    return {m.name: named.get(m.name) or _empty(m.input_type.full_name) for m in service.methods}


def _empty(full_name: str) -> Message:
    return getattr(pb, full_name.rpartition(".")[2])()  # type: ignore[no-any-return]


async def test_every_method_is_refused_without_a_valid_token_or_permission_and_nothing_changes(
    meters: StartMeter, engine: AsyncEngine
) -> None:
    meter = await start_with_callers(meters)
    account = await funded_account(meter.stub, 10_000, metadata=OPERATOR.metadata)
    hold = await call(meter, "Reserve", reserve_request(account), PROXY)
    calls = requests(account, hold.reservation_id)
    assert set(calls) == METHODS
    before = await fingerprint(engine)
    events_before = await _count(engine, "webhook_events")

    refusals = 0
    for method, request in sorted(calls.items()):
        for metadata, reason in (
            (None, "MISSING_CREDENTIALS"),
            ((("authorization", f"Basic {PROXY.token}"),), "MISSING_CREDENTIALS"),
            ((("authorization", "Bearer"),), "MISSING_CREDENTIALS"),
            ((("authorization", f"Bearer {new_token()}"),), "INVALID_TOKEN"),
            ((("authorization", f"Bearer {PROXY.token}x"),), "INVALID_TOKEN"),
        ):
            rpc = getattr(meter.stub, method)(request, metadata=metadata)
            await expect_error(first_answer(rpc), grpc.StatusCode.UNAUTHENTICATED, reason)
            refusals += 1
        for credential in CREDENTIALS:
            if not credential.may_call(method):
                info = await expect_error(
                    call(meter, method, request, credential), grpc.StatusCode.PERMISSION_DENIED, "METHOD_NOT_ALLOWED"
                )
                assert dict(info.metadata) == {"caller": credential.name, "method": method}
                refusals += 1
    assert refusals >= 5 * len(METHODS) + 2 * len(METHODS) - len(ROLES["proxy"] or ()) - len(ROLES["billing"] or ())
    assert await fingerprint(engine) == before, "a refused call changed the database"
    assert await _count(engine, "webhook_events") == events_before

    # Admitted: every caller whose role has the method gets past the gate (the answer may still
    # be a refusal of the request itself, never of the caller).
    for method, request in sorted(calls.items()):
        for credential in CREDENTIALS:
            if credential.may_call(method):
                try:
                    await call(meter, method, request, credential)
                except grpc.aio.AioRpcError as error:
                    assert error.code() not in (
                        grpc.StatusCode.UNAUTHENTICATED,
                        grpc.StatusCode.PERMISSION_DENIED,
                    ), f"{credential.name} {method}: {error.code()} {error.details()}"
    assert await fingerprint(engine) != before


async def test_health_and_reflection_answer_without_a_token(meters: StartMeter) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    meter = await start_with_callers(meters)
    answer = await health_pb2_grpc.HealthStub(meter.channel).Check(health_pb2.HealthCheckRequest())
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_every_ledger_entry_names_the_caller_that_wrote_it(meters: StartMeter, engine: AsyncEngine) -> None:
    meter = await start_with_callers(meters)
    account = await funded_account(meter.stub, 1000, metadata=OPERATOR.metadata)
    hold = await call(meter, "Reserve", reserve_request(account), PROXY)  # fast path
    await call(meter, "Commit", pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=40), PROXY)
    over = await call(meter, "Reserve", reserve_request(account, input_tokens=10, max_output_tokens=10), PROXY)
    # More than was held: the general path writes this usage.
    await call(meter, "Commit", pb.CommitRequest(reservation_id=over.reservation_id, input_tokens=30), PROXY)
    await call(meter, "CreditPurchase", pack_purchase(account), BILLING)
    status, _ = await deliver(meter.webhook_url, paid_checkout(account))  # through the adapter's token
    assert status == 200

    rows = await _ledger_callers(engine, account)
    assert rows == [
        ("adjustment", "ops"),
        ("usage", "proxy-eu"),
        ("usage", "proxy-eu"),
        ("purchase", "stripe-billing"),
        ("purchase", "stripe-billing"),
    ]
    listed = await call(meter, "ListLedgerEntries", pb.ListLedgerEntriesRequest(account_id=account), OPERATOR)
    assert [(pb.EntryKind.Name(e.kind), e.caller) for e in reversed(listed.entries)] == [
        ("ENTRY_KIND_ADJUSTMENT", "ops"),
        ("ENTRY_KIND_USAGE", "proxy-eu"),
        ("ENTRY_KIND_USAGE", "proxy-eu"),
        ("ENTRY_KIND_PURCHASE", "stripe-billing"),
        ("ENTRY_KIND_PURCHASE", "stripe-billing"),
    ]


async def test_without_callers_entries_say_anonymous(meter: RunningMeter, engine: AsyncEngine) -> None:
    account = await funded_account(meter.stub, 1000)
    hold = await meter.stub.Reserve(reserve_request(account))
    await meter.stub.Commit(pb.CommitRequest(reservation_id=hold.reservation_id, input_tokens=5))
    assert {caller for _, caller in await _ledger_callers(engine, account)} == {"anonymous"}


async def test_the_python_client_and_the_cli_present_their_token(meters: StartMeter) -> None:
    meter = await start_with_callers(meters)
    async with MeterClient(meter.address, token=OPERATOR.token) as client:
        await client.set_plan(account_id="acme-client", plan_id="free")
        assert (await client.get_balance(account_id="acme-client")).plan_id == "free"
    async with MeterClient(meter.address, token=PROXY.token) as client:
        with pytest.raises(Exception) as refused:
            await client.set_plan(account_id="acme-client", plan_id="pro")
        assert getattr(refused.value, "reason", "") == "METHOD_NOT_ALLOWED"

    code, out, err = await run_cli("account", "show", "acme-client", "--target", meter.address)
    assert code == 1 and "UNAUTHENTICATED MISSING_CREDENTIALS" in err
    assert "set METER_TOKEN to a caller's token" in err  # the error names its fix
    code, out, err = await run_cli("account", "show", "acme-client", "--target", meter.address, token="not-a-token")
    assert code == 1 and "METER_TOKEN is not the token of one of the server's callers" in err
    code, out, err = await run_cli("account", "show", "acme-client", "--target", meter.address, token=OPERATOR.token)
    assert code == 0, err
    assert out.startswith("account acme-client")


async def test_the_request_id_comes_back_on_answers_and_errors(meter: RunningMeter) -> None:
    call = meter.stub.GetCatalog(pb.GetCatalogRequest())
    await call
    generated = dict(await call.trailing_metadata())["x-request-id"]
    assert len(generated) == 24

    call = meter.stub.GetCatalog(pb.GetCatalogRequest(), metadata=(("x-request-id", "proxy-7f3a.1"),))
    await call
    assert dict(await call.trailing_metadata())["x-request-id"] == "proxy-7f3a.1"

    try:
        await meter.stub.GetBalance(pb.GetBalanceRequest(account_id="nobody-here"), metadata=(("x-request-id", "r-2"),))
    except grpc.aio.AioRpcError as error:
        assert error_info(error).reason == "ACCOUNT_NOT_FOUND"
        assert dict(error.trailing_metadata() or ())["x-request-id"] == "r-2"
    else:
        raise AssertionError("expected NOT_FOUND")


async def _ledger_callers(engine: AsyncEngine, account: str) -> list[tuple[str, str]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT kind, caller FROM ledger_entries WHERE account_id = :a AND amount <> 0 ORDER BY entry_id"),
            {"a": account},
        )
        return [(row.kind, row.caller) for row in rows]


async def _count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())
