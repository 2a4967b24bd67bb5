"""What a client may hold of meter's listeners, tried with raw sockets (meter.listeners): an
endless header is refused at its bound, a head or body too slow is cut, an idle connection is
closed, and connections over a listener's limit are closed unread, while the other listeners
(and the hot path) go on answering. Small limits and timeouts, set for each test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from conftest import StartMeter
from test_observability import delta, scrape

from meter.domain.addresses import host_and_port
from meter.listeners import MAX_HEAD_BYTES, MAX_LINE_BYTES
from meter.v1 import meter_pb2 as pb
from meterlab.testbed import free_port
from support import RunningMeter, eventually

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# Long enough not to end during a test that does not wait for it; tests of the timeouts use less.
PATIENT = 60.0


async def start(meters: StartMeter, **settings: object) -> RunningMeter:
    return await meters(connect_addr=f"127.0.0.1:{free_port()}", **settings)


def listener(meter: RunningMeter, name: str) -> str:
    """The listener's address: grpc, http_json or webhooks."""
    service = meter.service
    assert service.http_json is not None
    return {"grpc": service.grpc.address, "http_json": service.http_json.address, "webhooks": service.webhooks.address}[
        name
    ]


@contextlib.asynccontextmanager
async def connections(address: str, count: int) -> AsyncIterator[list[Connection]]:
    parsed = host_and_port(address)
    assert parsed is not None
    opened = [await asyncio.open_connection(*parsed) for _ in range(count)]
    try:
        yield opened
    finally:
        for _, writer in opened:
            writer.close()


async def answer(reader: asyncio.StreamReader) -> bytes:
    """All the server sends until it closes the connection (b"" for a close without a word)."""
    try:
        return await asyncio.wait_for(reader.read(), timeout=30)  # a deadline, not a sleep
    except ConnectionResetError:
        return b""


CATALOG = "/meter.v1.MeterService/GetCatalog"


def request_head(path: str, length: int = 2, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


async def grpc_answers(meter: RunningMeter) -> bool:
    """On a connection of its own (channels share connections to an address by default)."""
    async with grpc.aio.insecure_channel(meter.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        try:
            await channel.unary_unary(
                CATALOG,
                request_serializer=pb.GetCatalogRequest.SerializeToString,
                response_deserializer=pb.GetCatalogResponse.FromString,
            )(pb.GetCatalogRequest(), timeout=5)
        except grpc.aio.AioRpcError:
            return False
    return True


async def http_answers(url: str, body: str | None = None) -> bool:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            if body is None:
                async with session.get(url) as response:
                    return response.status == 200
            headers = {"content-type": "application/json"}
            async with session.post(url, data=body, headers=headers) as response:
                return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def answering(meter: RunningMeter) -> dict[str, bool]:
    """Which listeners answer a call now: gRPC GetCatalog, HTTP/JSON GetCatalog, /healthz."""
    return {
        "grpc": await grpc_answers(meter),
        "http_json": await http_answers(f"http://{listener(meter, 'http_json')}{CATALOG}", "{}"),
        "webhooks": await http_answers(f"http://{listener(meter, 'webhooks')}/healthz"),
    }


class TestHeads:
    async def test_an_endless_header_is_refused_at_its_bound_while_grpc_answers(self, meters: StartMeter) -> None:
        """httptools would buffer a header line of any length (248 MB, on the event loop that
        serves Reserve); HTTP/JSON reads 16 kB of a head, webhooks 8 kB of a line, then refuse."""
        meter = await start(meters, head_timeout_seconds=PATIENT)
        endless = b"X-Endless: " + b"a" * (4 * MAX_HEAD_BYTES)  # and no end of line
        for name, bound, status in (("http_json", MAX_HEAD_BYTES, b"431"), ("webhooks", MAX_LINE_BYTES, b"400")):
            async with connections(listener(meter, name), 1) as [(reader, writer)]:
                writer.write(f"POST {CATALOG} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + endless)
                await writer.drain()
                refused = await answer(reader)
            assert refused.split(b" ")[:2] in ([b"HTTP/1.1", status], [b"HTTP/1.0", status]), (name, refused[:200])
            assert len(endless) > bound
        assert await answering(meter) == {"grpc": True, "http_json": True, "webhooks": True}

    async def test_a_head_under_the_bound_is_answered(self, meters: StartMeter) -> None:
        meter = await start(meters)
        async with connections(listener(meter, "http_json"), 1) as [(reader, writer)]:
            writer.write(request_head(CATALOG, extra=f"X-Padding: {'a' * (MAX_HEAD_BYTES - 400)}\r\n") + b"{}")
            await writer.drain()
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")

    @pytest.mark.parametrize("name", ["http_json", "webhooks"])
    async def test_a_head_too_slow_is_cut_and_an_idle_connection_closed(self, meters: StartMeter, name: str) -> None:
        """From its opening (or its previous answer) a connection has METER_HEAD_TIMEOUT_SECONDS
        to send a whole head, however it trickles it; one that sends nothing is closed too."""
        meter = await start(meters, head_timeout_seconds=0.3)
        async with connections(listener(meter, name), 2) as [(slow, writer), (idle, _)]:
            writer.write(f"POST {CATALOG} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
            await writer.drain()
            cut = await answer(slow)
            assert await answer(idle) == b""
        assert cut == b"" if name == "webhooks" else cut.startswith(b"HTTP/1.1 408"), cut[:200]

    async def test_a_keep_alive_connection_idle_after_its_answer_is_closed(self, meters: StartMeter) -> None:
        meter = await start(meters, head_timeout_seconds=0.3)
        async with connections(listener(meter, "http_json"), 1) as [(reader, writer)]:
            writer.write(request_head(CATALOG) + b"{}")
            await writer.drain()
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            assert b"HTTP/1.1" not in await answer(reader)  # the rest of the answer, then the close

    @pytest.mark.parametrize("name", ["http_json", "webhooks"])
    async def test_a_body_too_slow_is_cut(self, meters: StartMeter, name: str) -> None:
        meter = await start(meters, body_timeout_seconds=0.3, head_timeout_seconds=PATIENT)
        path = CATALOG if name == "http_json" else "/webhooks/stripe"
        async with connections(listener(meter, name), 1) as [(reader, writer)]:
            writer.write(request_head(path, length=100) + b"{")  # and then nothing more
            await writer.drain()
            cut = await answer(reader)
        # HTTP/JSON closes the connection (its handler sees the client gone); webhooks answer 408.
        assert cut == b"" if name == "http_json" else cut.startswith(b"HTTP/1.1 408"), cut[:200]


class TestConnections:
    @pytest.mark.parametrize("name", ["grpc", "http_json", "webhooks"])
    async def test_a_flood_fills_its_listener_not_the_others(self, meters: StartMeter, name: str) -> None:
        """Idle connections up to METER_MAX_CONNECTIONS on one listener: one more is closed at once,
        unread, and the other listeners (gRPC, the database pool behind it, /healthz) answer."""
        limit = 8
        meter = await start(meters, max_connections=limit, head_timeout_seconds=PATIENT)
        await meter.stub.GetCatalog(pb.GetCatalogRequest())  # the test's own channel: one gRPC connection
        before = await scrape(meter)
        before = await scrape(meter)
        others = {other: True for other in ("grpc", "http_json", "webhooks") if other != name}
        async with connections(listener(meter, name), limit - 1 if name == "grpc" else limit) as held:
            async with connections(listener(meter, name), 1) as [(reader, writer)]:
                writer.write(request_head("/healthz"))
                assert await answer(reader) == b""  # closed without a word
            answers = await answering(meter)
            assert {other: answers[other] for other in others} == others
            assert answers[name] is False
            if name != "grpc":  # a held connection is served as any other
                reader, writer = held[0]
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert (await reader.readline()).startswith(b"HTTP/1.1 "), name
        # Once the flood is gone, every listener answers again (grpc core frees a place when it has
        # seen the connection close: a moment after the client closed it).
        everyone = {"grpc": True, "http_json": True, "webhooks": True}
        assert await eventually(lambda: answering(meter), lambda now: now == everyone) == everyone
        if name != "grpc":  # gRPC's limit is grpc core's own, which counts nothing meter can read
            after = await scrape(meter)
            assert delta(before, after, "meter_listener_refusals_total", listener=name, cause="connections") >= 2
