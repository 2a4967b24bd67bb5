"""Hostile input, property-based: every RPC's fields (drawn from its descriptor, so a new field is
fuzzed without touching this file) and the webhook endpoint. Every answer is a deliberate status,
never INTERNAL, UNKNOWN or a 500, and a rejected request leaves the database exactly as it was."""

from __future__ import annotations

import gzip
import io
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import grpc
import pytest
import stripe
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.v1 import meter_pb2 as pb
from support import WEBHOOK_SECRET, RunningMeter, fingerprint, first_answer, funded_account, reserve_request

DELIBERATE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
}
EXAMPLES = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

INT64_EDGES = [0, 1, -1, 2**31 - 1, 2**31, 2**53 + 1, 2**62, 2**63 - 1, -(2**63)]
INT32_EDGES = [0, 1, -1, 2**31 - 1, -(2**31), 86_400, 10**9]
texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8", categories=["Cc", "Zs", "So", "Mn"]), max_size=20),
    st.sampled_from(
        ["", " ", "x" * 10_000, "a/b", "../..", "acct\x00", "é" * 200, "%s%n", "'; DROP TABLE accounts;--"]
    ),
)


class Known:
    """Real ids mixed into the draws, so fuzzing gets past the first validation into the depths."""

    account = ""
    reservation = ""


PLAUSIBLE = {"model": "basic", "pack_id": "pack_1000_tokens", "plan_id": "pro", "currency": "usd"}


def _value(data: st.DataObject, field: FieldDescriptor) -> Any:
    """Half the time a plausible value, so that a request gets past the first check and the
    other fields' hostility reaches the code behind it."""
    if data.draw(st.booleans()):
        return _plausible(data, field)
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return data.draw(texts)
    if kind == FieldDescriptor.TYPE_BYTES:
        return data.draw(st.one_of(st.binary(max_size=64), st.just(b"\xff" * 10_000), st.just(b"{}")))
    if kind == FieldDescriptor.TYPE_BOOL:
        return data.draw(st.booleans())
    if kind == FieldDescriptor.TYPE_ENUM:
        return data.draw(st.integers(-3, 99))  # mostly unknown values
    if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32):
        return data.draw(st.one_of(st.sampled_from(INT32_EDGES), st.integers(-(2**31), 2**31 - 1)))
    if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64):
        return data.draw(st.one_of(st.sampled_from(INT64_EDGES), st.integers(-(2**63), 2**63 - 1)))
    raise AssertionError(f"no strategy for {field.full_name}")


def _plausible(data: st.DataObject, field: FieldDescriptor) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        if field.name == "account_id":
            return Known.account
        if field.name == "reservation_id":
            return data.draw(st.sampled_from([Known.reservation, Known.account + "/" + "f" * 32]))
        return PLAUSIBLE.get(field.name) or data.draw(st.from_regex(r"[a-z0-9_]{1,24}", fullmatch=True))
    if kind == FieldDescriptor.TYPE_ENUM:
        return data.draw(st.sampled_from([v.number for v in field.enum_type.values]))
    if kind == FieldDescriptor.TYPE_BOOL:
        return data.draw(st.booleans())
    if kind == FieldDescriptor.TYPE_BYTES:
        return b"{}"
    return data.draw(st.integers(0, 2_000))


def _message(data: st.DataObject, descriptor: Descriptor, depth: int = 0) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for field in descriptor.fields:
        if not data.draw(st.booleans()):  # a missing field
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            fields[field.name] = data.draw(st.dictionaries(texts, texts, max_size=4))
        elif field.message_type is not None and field.message_type.full_name == "google.protobuf.Timestamp":
            seconds = data.draw(st.one_of(st.sampled_from(INT64_EDGES), st.integers(-62135596800, 253402300799)))
            fields[field.name] = {"seconds": seconds, "nanos": data.draw(st.sampled_from([0, 999_999_999, -1]))}
        elif field.message_type is not None:
            if depth < 2:
                fields[field.name] = _message(data, field.message_type, depth + 1)
        elif field.is_repeated:
            fields[field.name] = data.draw(st.lists(st.just(_value(data, field)), max_size=3))
        else:
            fields[field.name] = _value(data, field)
    return fields


def _build(descriptor: Descriptor, fields: dict[str, Any]) -> Message | None:
    """The protobuf message, or None when protobuf itself refuses the value (out of range)."""
    cls = getattr(pb, descriptor.name)
    try:
        return cls(**fields)  # type: ignore[no-any-return]
    except (ValueError, TypeError):
        return None


METHODS = [m for m in pb.DESCRIPTOR.services_by_name["MeterService"].methods]


@pytest.fixture
async def known(meter: RunningMeter) -> RunningMeter:
    Known.account = await funded_account(meter.stub, 100_000)
    Known.reservation = (await meter.stub.Reserve(reserve_request(Known.account))).reservation_id
    return meter


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@EXAMPLES
@given(data=st.data())
async def test_every_rpc_answers_hostile_fields_deliberately(
    known: RunningMeter, engine: AsyncEngine, method: Any, data: st.DataObject
) -> None:
    request = _build(method.input_type, _message(data, method.input_type))
    if request is None:
        return
    call: Callable[..., Awaitable[Any]] = getattr(known.stub, method.name)
    before = await fingerprint(engine)
    try:
        await first_answer(call(request, timeout=10), within=1.0)
        event("OK")
    except TimeoutError:
        event("WAITING")  # a stream open on an account with no event after the given sequence
        assert await fingerprint(engine) == before, f"{method.name}({request}) changed the database"
    except grpc.aio.AioRpcError as error:
        event(error.code().name)  # shown by --hypothesis-show-statistics
        assert error.code() in DELIBERATE, f"{method.name}({request}) -> {error.code()} {error.details()}"
        assert await fingerprint(engine) == before, f"rejected {method.name}({request}) changed the database"


def _signed(body: bytes) -> str:
    return stripe.WebhookSignature.generate_signature_header(
        body.decode("utf-8", "replace"), WEBHOOK_SECRET, timestamp=int(time.time())
    )


bodies = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(texts, st.one_of(texts, st.integers()), max_size=4)),
    st.builds(
        lambda kind, obj: json.dumps({"id": "evt_fuzz", "type": kind, "data": {"object": obj}}).encode(),
        st.sampled_from(["checkout.session.completed", "charge.refunded", "invoice.paid", "x" * 300, ""]),
        st.dictionaries(texts, st.one_of(texts, st.integers(), st.none(), st.booleans()), max_size=5),
    ),
)


@EXAMPLES
@given(
    body=bodies,
    signature=st.sampled_from(["none", "garbage", "valid", "wrong-secret", "stale"]),
    encoding=st.sampled_from([None, "gzip", "identity", "br", "garbage"]),
    content_type=st.sampled_from(["application/json", "text/plain", "multipart/form-data", ""]),
)
async def test_the_webhook_endpoint_answers_hostile_requests_deliberately(
    known: RunningMeter, engine: AsyncEngine, body: bytes, signature: str, encoding: str | None, content_type: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    if signature != "none":
        headers["Stripe-Signature"] = {
            "garbage": "t=1,v1=zz",
            "valid": _signed(body),
            "wrong-secret": stripe.WebhookSignature.generate_signature_header(body.decode("utf-8", "replace"), "x"),
            "stale": stripe.WebhookSignature.generate_signature_header(
                body.decode("utf-8", "replace"), WEBHOOK_SECRET, timestamp=1
            ),
        }[signature]
    payload = body
    if encoding:
        headers["Content-Encoding"] = encoding
        payload = gzip.compress(body) if encoding == "gzip" else body
    before = await fingerprint(engine)
    async with aiohttp.ClientSession() as session, session.post(known.webhook_url, data=payload, headers=headers) as r:
        status = r.status
    assert status in (200, 400, 413, 415), f"{status} for {headers} {body[:100]!r}"
    if status != 200:
        assert await fingerprint(engine) == before


async def test_an_oversized_webhook_body_is_refused_with_413(known: RunningMeter, engine: AsyncEngine) -> None:
    body = b'{"id": "evt_big", "type": "x", "data": {"object": {"pad": "' + b"x" * 2_000_000 + b'"}}}'
    before = await fingerprint(engine)
    headers = {"Stripe-Signature": _signed(body), "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(known.webhook_url, data=io.BytesIO(body), headers=headers) as r:
            assert r.status == 413
    assert await fingerprint(engine) == before
