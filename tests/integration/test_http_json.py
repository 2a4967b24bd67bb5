"""MeterService over HTTP/JSON (Connect, METER_CONNECT_ADDR), called as curl or fetch() would: a
POST of a JSON body per call. The same servicer behind the same gate as gRPC: the same answers,
the same refusals with their ErrorInfo (and RetryInfo) in Connect's error details, the same
callers and tokens, the same per-caller rate counted across both, the same drain on stop."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import struct
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import multidict
import pytest
from conftest import StartMeter
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.rpc import error_details_pb2
from test_tls import Authority

from meter.config import ConfigError
from meter.domain.callers import hash_token, new_token
from meter.v1 import meter_pb2 as pb
from meterlab.testbed import free_port
from support import RunningMeter, expect_error, funded_account, new_id

OPERATOR = new_token()
PROXY = new_token()
CALLERS = (
    f'[[caller]]\nname = "ops"\nrole = "operator"\ntoken_sha256 = "{hash_token(OPERATOR)}"\n'
    "requests_per_second = { GetCatalog = 3 }\n"
    f'[[caller]]\nname = "edge-proxy"\nrole = "proxy"\ntoken_sha256 = "{hash_token(PROXY)}"\n'
)
AS_OPERATOR = (("authorization", f"Bearer {OPERATOR}"),)
SERVICE = pb.DESCRIPTOR.services_by_name["MeterService"]


class Answer:
    """One HTTP answer: its status, headers and JSON body."""

    def __init__(self, status: int, headers: Any, body: dict[str, Any]) -> None:
        self.status, self.headers, self.body = status, headers, body

    def detail(self, kind: type[Any]) -> Any:
        """The error detail of that type, decoded from its base64 `value` (what a client with a
        protobuf runtime reads); its `debug` JSON must say the same."""
        name = kind.DESCRIPTOR.full_name
        found = [d for d in self.body.get("details", ()) if d["type"] == name]
        assert len(found) == 1, self.body
        message = kind.FromString(base64.b64decode(found[0]["value"] + "=" * (-len(found[0]["value"]) % 4)))
        assert found[0]["debug"] == json_format.MessageToDict(message), found[0]
        return message


async def start(meters: StartMeter, **settings: Any) -> tuple[RunningMeter, str]:
    """A meter with its HTTP/JSON listener on a free port, and that listener's base URL."""
    meter = await meters(connect_addr=f"127.0.0.1:{free_port()}", **settings)
    assert meter.service.http_json is not None
    return meter, f"http://{meter.service.http_json.address}/meter.v1.MeterService"


async def post(base: str, method: str, body: dict[str, Any], token: str | None = None, **headers: str) -> Answer:
    """As `curl -H 'content-type: application/json' -d BODY BASE/METHOD` sends it."""
    headers = {"content-type": "application/json"} | headers
    if token:
        headers["authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/{method}", data=json.dumps(body), headers=headers) as r,
    ):
        return Answer(r.status, r.headers, await r.json(content_type=None))


async def test_reserve_commit_replay_refusal_and_balance_as_grpc_sees_them(meters: StartMeter) -> None:
    meter, base = await start(meters)
    account = new_id()
    assert (await post(base, "SetPlan", {"account_id": account, "plan_id": "free"})).status == 200
    funded = await post(
        base,
        "Adjust",
        {
            "account_id": account,
            "pool": "POOL_PURCHASED",
            "delta": 1000,
            "reason": "test funding",
            "request_id": new_id(),
        },
    )
    assert funded.status == 200 and funded.body["balance"]["available"] == "1000"  # int64: a JSON string

    reserve = {
        "account_id": account,
        "request_id": "call-1",
        "model": "basic",
        "input_tokens": 100,
        "max_output_tokens": 300,
    }
    held = await post(base, "Reserve", reserve, **{"x-request-id": "edge-req-1"})
    assert held.status == 200, held.body
    assert held.headers["x-request-id"] == "edge-req-1"  # the caller's id, as gRPC returns it
    assert held.body["heldTokens"] == "400" and held.body["status"] == "RESERVATION_STATUS_OPEN"
    assert held.body["balance"]["held"] == "400" and held.body["balance"]["available"] == "600"

    # The same request_id again: the same reservation, nothing held twice.
    again = await post(base, "Reserve", reserve)
    assert again.status == 200 and again.body["reservationId"] == held.body["reservationId"]
    assert again.body["balance"]["held"] == "400"

    committed = await post(
        base, "Commit", {"reservationId": held.body["reservationId"], "inputTokens": 100, "outputTokens": 50}
    )
    assert committed.status == 200, committed.body
    assert committed.body["chargedTokens"] == "150" and committed.body["unbilledTokens"] == "0"
    assert committed.body["balance"]["available"] == "850" and committed.body["balance"]["held"] == "0"

    refused = await post(base, "Reserve", reserve | {"request_id": "call-2", "max_output_tokens": 5000})
    assert refused.status == 400 and refused.body["code"] == "failed_precondition", refused.body
    info = refused.detail(error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("INSUFFICIENT_TOKENS", "meter")
    assert dict(info.metadata) == {"required": "5100", "available": "850"}
    assert refused.headers["x-request-id"]  # refusals carry one too

    # GetBalance over HTTP/JSON is what gRPC answers, field for field.
    over_http = await post(base, "GetBalance", {"account_id": account})
    over_grpc = await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))
    assert over_http.status == 200
    assert json_format.ParseDict(over_http.body, pb.GetBalanceResponse()) == over_grpc
    assert over_grpc.balance.available == 850


async def test_malformed_and_misspelt_requests_are_invalid_argument(meters: StartMeter) -> None:
    _, base = await start(meters)
    misspelt = await post(
        base, "Reserve", {"account_id": "a", "request_id": "r", "model": "basic", "max_output_token": 5}
    )
    assert misspelt.status == 400 and misspelt.body["code"] == "invalid_argument"
    assert "max_output_token" in misspelt.body["message"]
    info = misspelt.detail(error_details_pb2.ErrorInfo)  # refused before the gate, with the same ErrorInfo
    assert (info.reason, info.metadata["field"]) == ("INVALID_FIELD", "max_output_token")
    missing = await post(base, "GetBalance", {})
    assert missing.body["code"] == "invalid_argument"
    assert missing.detail(error_details_pb2.ErrorInfo).reason == "INVALID_FIELD"
    # Refusals connectrpc makes before meter sees the call carry the same kind of body: what to send.
    no_such = await post(base, "NoSuchMethod", {})
    info = no_such.detail(error_details_pb2.ErrorInfo)
    assert (no_such.status, info.reason, info.metadata["field"]) == (404, "INVALID_FIELD", "path")
    assert "POST to /meter.v1.MeterService/<Method>" in no_such.body["message"]
    async with aiohttp.ClientSession() as session, session.get(f"{base}/GetBalance") as r:
        not_posted = Answer(r.status, r.headers, await r.json(content_type=None))
    info = not_posted.detail(error_details_pb2.ErrorInfo)
    assert (not_posted.status, info.metadata["field"], not_posted.body["message"]) == (
        405,
        "method",
        "method: GET is not served: send a POST",
    )


async def test_callers_tokens_and_permissions_as_on_grpc(meters: StartMeter) -> None:
    _, base = await start(meters, callers_toml=CALLERS, webhook_token=OPERATOR)
    unauthenticated = await post(base, "GetCatalog", {})
    assert unauthenticated.status == 401 and unauthenticated.body["code"] == "unauthenticated"
    assert unauthenticated.detail(error_details_pb2.ErrorInfo).reason == "MISSING_CREDENTIALS"
    denied = await post(base, "Adjust", {"account_id": "a", "delta": 5}, token=PROXY)  # a proxy may not Adjust
    assert denied.status == 403 and denied.body["code"] == "permission_denied"
    info = denied.detail(error_details_pb2.ErrorInfo)
    assert info.reason == "METHOD_NOT_ALLOWED" and info.metadata["method"] == "Adjust"
    account = new_id()
    assert (await post(base, "SetPlan", {"account_id": account, "plan_id": "free"}, token=OPERATOR)).status == 200
    allowed = await post(base, "GetBalance", {"account_id": account}, token=PROXY)
    assert allowed.status == 200 and allowed.body["balance"]["accountId"] == account


async def test_a_callers_rate_is_one_across_grpc_and_http_json(meters: StartMeter) -> None:
    meter, base = await start(meters, callers_toml=CALLERS, webhook_token=OPERATOR)
    into = (time.time() + meter.clock.offset_seconds) % 1
    meter.clock.advance(timedelta(seconds=1 - into + 0.005))  # just after a second begins
    await meter.stub.GetCatalog(pb.GetCatalogRequest(), metadata=AS_OPERATOR)
    for _ in range(2):
        assert (await post(base, "GetCatalog", {}, token=OPERATOR)).status == 200
    limited = await post(base, "GetCatalog", {}, token=OPERATOR)
    assert limited.status == 429 and limited.body["code"] == "resource_exhausted", limited.body
    assert limited.detail(error_details_pb2.ErrorInfo).reason == "RATE_LIMITED"
    delay = limited.detail(error_details_pb2.RetryInfo).retry_delay.ToNanoseconds() / 1e9
    assert 0 < delay <= 1


async def test_a_watch_streams_events_and_ends_when_the_server_drains(meters: StartMeter) -> None:
    """The one server stream, in Connect's streaming framing (what a fetch() reader parses):
    5-byte envelopes, the last one flagged end-of-stream; the drain on stop ends it, OK."""
    meter, base = await start(meters)
    account = new_id()
    await post(base, "SetPlan", {"account_id": account, "plan_id": "free"})
    request = json.dumps({"account_id": account}).encode()
    headers = {"content-type": "application/connect+json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{base}/WatchEvents", data=struct.pack(">BI", 0, len(request)) + request, headers=headers
        ) as response:
            assert response.status == 200
            flags, size = struct.unpack(">BI", await response.content.readexactly(5))
            event = json.loads(await response.content.readexactly(size))
            assert flags == 0 and event["event"]["accountId"] == account
            await meter.service.stop()  # drains: the stream ends rather than holding the stop
            flags, size = struct.unpack(">BI", await response.content.readexactly(5))
            end = json.loads(await response.content.readexactly(size))
            assert flags == 2 and "error" not in end, end
    with pytest.raises(aiohttp.ClientConnectionError):  # and the listener is closed
        await post(base, "GetCatalog", {})


async def test_no_callers_means_loopback_only_and_a_taken_address_is_named(meters: StartMeter) -> None:
    with pytest.raises(ConfigError, match="METER_CONNECT_ADDR"):
        await meters(connect_addr="0.0.0.0:8081")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(ConfigError, match=f"cannot listen on {address} \\(METER_CONNECT_ADDR\\)"):
            await meters(connect_addr=address)
    with pytest.raises(ConfigError, match="must be host:port"):
        await meters(connect_addr="8081")


async def test_mutual_tls_with_the_grpc_servers_files(meters: StartMeter, tmp_path: Path) -> None:
    """METER_TLS_*: the listener is HTTPS, and with a client CA it takes only its clients."""
    ca = Authority.create(tmp_path, "ca")
    server, client = ca.issue(tmp_path, "server", server=True), ca.issue(tmp_path, "client", server=False)
    _, base = await start(meters, tls_cert_file=server.cert, tls_key_file=server.key, tls_client_ca_file=ca.path)
    base = base.replace("http://", "https://")
    trusted = ssl.create_default_context(cafile=ca.path)
    with_certificate = ssl.create_default_context(cafile=ca.path)
    with_certificate.load_cert_chain(client.cert, client.key)
    connector = aiohttp.TCPConnector(ssl=with_certificate)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(f"{base}/GetCatalog", data="{}", headers={"content-type": "application/json"}) as r:
            assert r.status == 200 and (await r.json())["version"]
    for refused in (trusted, False):  # no client certificate; plaintext
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=refused)) as session:
            url = base if refused else base.replace("https://", "http://")
            with pytest.raises(aiohttp.ClientError):
                async with session.post(f"{url}/GetCatalog", data="{}") as r:
                    await r.read()


async def post_raw(base: str, method: str, body: bytes, headers: Any = None) -> Answer:
    """A body as given, byte for byte (a JSON object with a key twice cannot be built from a dict);
    a server stream's in Connect's envelope, its end message's error answered as the body."""
    stream = SERVICE.methods_by_name[method].server_streaming
    content_type = "application/connect+json" if stream else "application/json"
    sent = multidict.CIMultiDict(headers or {})
    sent.setdefault("content-type", content_type)
    data = struct.pack(">BI", 0, len(body)) + body if stream else body
    async with aiohttp.ClientSession() as session, session.post(f"{base}/{method}", data=data, headers=sent) as r:
        raw = await r.read()
    if stream:
        flags, size = struct.unpack(">BI", raw[:5])
        assert flags == 2, raw  # the end of the stream: the refusal, before any event
        return Answer(400, {}, json.loads(raw[5 : 5 + size])["error"])
    return Answer(r.status, r.headers, json.loads(raw))


def _plausible(field: FieldDescriptor) -> Any:
    """A value of the field's JSON type."""
    if field.message_type is not None:
        return {}
    return {
        FieldDescriptor.TYPE_STRING: "x",
        FieldDescriptor.TYPE_BYTES: "",
        FieldDescriptor.TYPE_BOOL: True,
        FieldDescriptor.TYPE_ENUM: 0,
    }.get(field.type, 1)


class TestOneMeaningPerBody:
    """A request over HTTP/JSON means one thing, or is refused INVALID_FIELD naming the field."""

    async def test_a_field_given_twice_under_either_of_its_names_is_refused_on_every_method(
        self, meters: StartMeter
    ) -> None:
        _, base = await start(meters)
        for method in SERVICE.methods:
            for field in method.input_type.fields[:1]:  # a request's first field: its reading is shared
                value = json.dumps(_plausible(field))
                for second in {field.name, field.json_name}:
                    body = f'{{"{field.name}": {value}, "{second}": {value}}}'.encode()
                    refused = await post_raw(base, method.name, body)
                    assert refused.body["code"] == "invalid_argument", (method.name, body, refused.body)
                    info = refused.detail(error_details_pb2.ErrorInfo)
                    assert (info.reason, info.metadata["field"]) == ("INVALID_FIELD", field.name), (method.name, body)

    async def test_an_adjust_naming_two_accounts_moves_nothing(self, meters: StartMeter) -> None:
        meter, base = await start(meters)
        first, second = await funded_account(meter.stub, 100), await funded_account(meter.stub, 100)
        body = json.dumps(
            {"account_id": first, "pool": "POOL_PURCHASED", "delta": 5000, "reason": "x", "request_id": new_id()}
        )
        refused = await post_raw(base, "Adjust", body.replace("}", f', "accountId": "{second}"}}').encode())
        assert refused.detail(error_details_pb2.ErrorInfo).metadata["field"] == "account_id"
        for account in (first, second):
            balance = await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))
            assert balance.balance.available == 100
        nested = {"account_id": first, "source_event": {"event_id": "evt_1", "eventId": "evt_2"}}
        refused = await post_raw(base, "CreditPurchase", json.dumps(nested).encode())
        assert refused.detail(error_details_pb2.ErrorInfo).metadata["field"] == "source_event.event_id"

    async def test_integers_are_ascii_digits_and_bodies_utf8(self, meters: StartMeter) -> None:
        """protobuf's JSON reader takes "1_0" and full-width digits as 10 (it calls int()); a
        charset other than UTF-8 would be read as UTF-8. Refused, with meter's ErrorInfo."""
        meter, base = await start(meters)
        account = await funded_account(meter.stub, 100)
        for written in ("1_0", "１０", " 10", "²"):
            body = {
                "account_id": account,
                "pool": "POOL_PURCHASED",
                "delta": written,
                "reason": "x",
                "request_id": new_id(),
            }
            refused = await post_raw(base, "Adjust", json.dumps(body, ensure_ascii=False).encode())
            info = refused.detail(error_details_pb2.ErrorInfo)
            assert (refused.status, info.reason, info.metadata["field"]) == (400, "INVALID_FIELD", "delta"), written
        wide = await post_raw(
            base,
            "GetBalance",
            json.dumps({"account_id": account}).encode("utf-16"),
            {"content-type": "application/json; charset=utf-16"},
        )
        assert wide.detail(error_details_pb2.ErrorInfo).metadata["field"] == "content-type"
        for content_type in ("", "text/plain"):  # no codec for it: 415, and a body saying what to send
            unreadable = await post_raw(
                base, "GetBalance", json.dumps({"account_id": account}).encode(), {"content-type": content_type}
            )
            info = unreadable.detail(error_details_pb2.ErrorInfo)
            assert (unreadable.status, info.reason, info.metadata["field"]) == (415, "INVALID_FIELD", "content-type")
            assert "send application/json (or application/proto)" in unreadable.body["message"]
            assert unreadable.headers["accept-post"] == "application/json, application/proto"
        for garbled in (b"{", b"\xff\xfe{}", b"[]", b'{"account_id": "' + b"[" * 10_000 + b'"'):
            refused = await post_raw(base, "GetBalance", garbled)
            assert refused.detail(error_details_pb2.ErrorInfo).metadata["field"] == "body", garbled[:20]
        assert (await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))).balance.available == 100
        utf8 = await post_raw(
            base,
            "GetBalance",
            json.dumps({"account_id": account}).encode(),
            {"content-type": "application/json; charset=UTF-8"},
        )
        assert utf8.status == 200 and utf8.body["balance"]["available"] == "100"

    async def test_event_amounts_are_whole_numbers_as_in_the_webhook_body(self, meters: StartMeter) -> None:
        meter, base = await start(meters)
        account = await funded_account(meter.stub, 1_000_000)
        listed = await post_raw(base, "ListEvents", json.dumps({"account_id": account}).encode())
        adjusted = [event for event in listed.body["events"] if event["type"] == "balance.adjusted"]
        assert adjusted, listed.body
        numbers = [value for value in adjusted[0]["data"].values() if isinstance(value, (int, float))]
        assert 1_000_000 in numbers and all(type(value) is int for value in numbers), adjusted[0]["data"]


class TestOnlyThisMachineWithoutCallers:
    """DNS rebinding: a web page whose name resolves to 127.0.0.1 reaches a laptop's meter, but
    its requests carry its own Host and Origin. Without callers, both must be loopback names."""

    async def test_a_foreign_host_or_origin_is_refused_and_moves_nothing(self, meters: StartMeter) -> None:
        meter, base = await start(meters)
        account = await funded_account(meter.stub, 100)
        port = base.split("/")[2].rpartition(":")[2]
        adjust = {"account_id": account, "pool": "POOL_PURCHASED", "delta": 1_000_000, "reason": "x"}
        for headers, named in (
            ({"host": "rebind.attacker.example"}, "host"),
            ({"host": f"rebind.attacker.example:{port}", "origin": f"http://rebind.attacker.example:{port}"}, "host"),
            ({"origin": "https://attacker.example"}, "origin"),
            ({"origin": "null"}, "origin"),
        ):
            refused = await post(base, "Adjust", adjust | {"request_id": new_id()}, **headers)
            assert refused.status == 403 and refused.body["code"] == "permission_denied", refused.body
            info = refused.detail(error_details_pb2.ErrorInfo)
            assert (info.reason, info.metadata["header"]) == ("LOOPBACK_ONLY", named), headers
        assert (await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))).balance.available == 100
        for headers in (
            {"host": f"localhost:{port}", "origin": "http://localhost:3000"},
            {"host": f"[::1]:{port}"},
            {"host": f"127.0.0.1:{port}", "origin": f"http://127.0.0.1:{port}"},
        ):
            allowed = await post(base, "GetBalance", {"account_id": account}, **headers)
            assert allowed.status == 200, (headers, allowed.body)

    async def test_with_callers_a_token_is_what_counts(self, meters: StartMeter) -> None:
        meter, base = await start(meters, callers_toml=CALLERS, webhook_token=OPERATOR)
        catalog = await post(
            base, "GetCatalog", {}, token=OPERATOR, host="meter.internal", origin="https://ops.example"
        )
        assert catalog.status == 200, catalog.body


class TestOneCredential:
    """Two authorization headers: gRPC read the last, HTTP/JSON the first, so a proxy checking one
    let the other through. Refused on both, UNAUTHENTICATED MULTIPLE_CREDENTIALS."""

    async def test_two_authorization_headers_are_refused_on_both_protocols(self, meters: StartMeter) -> None:
        meter, base = await start(meters, callers_toml=CALLERS, webhook_token=OPERATOR)
        for pair in ((OPERATOR, PROXY), (PROXY, OPERATOR), (OPERATOR, OPERATOR)):
            metadata = tuple(("authorization", f"Bearer {token}") for token in pair)
            await expect_error(
                meter.stub.GetCatalog(pb.GetCatalogRequest(), metadata=metadata),
                grpc.StatusCode.UNAUTHENTICATED,
                "MULTIPLE_CREDENTIALS",
            )
            refused = await post_raw(base, "GetCatalog", b"{}", multidict.CIMultiDict(metadata))
            assert (
                refused.status == 401 and refused.detail(error_details_pb2.ErrorInfo).reason == "MULTIPLE_CREDENTIALS"
            )
        assert (await post(base, "GetCatalog", {}, token=OPERATOR)).status == 200
