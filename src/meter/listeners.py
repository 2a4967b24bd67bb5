"""What one client may hold of meter's listeners: connections, bytes and time before a request is
read. Every listener shares the process's file descriptors and event loop with the hot path and
the database pool, so none may be held without bound:

- connections: each listener holds at most `max_connections` (METER_MAX_CONNECTIONS; by default
  a quarter of the process's open-file limit, so the three listeners together leave a quarter
  for the database pool and the rest). One more is closed as soon as it is accepted, unread: a
  flood of one port fills that port, not the process.
- the head (request line and headers): it must be complete within `head_timeout_seconds` of the
  connection's opening or of its previous answer (so an idle keep-alive connection is closed
  after that long too), and it is bounded in bytes before it is parsed: a client sending one
  endless header is refused at the bound, not read on the event loop that serves Reserve.
- the body: complete within `body_timeout_seconds` of the head.

Each listener gets these from its own library where the library has them, and from `BoundedHttp`
where it has not:

- gRPC (grpc core's channel arguments): the connection limit, a handshake timeout (a connection
  that has not begun HTTP/2 within the head timeout is closed) and an idle timeout
  (METER_GRPC_IDLE_SECONDS: a connection without calls that long gets a GOAWAY; clients
  reconnect on their next call). A call's own time is its client's deadline.
- webhooks, /metrics and /healthz (aiohttp): its parser's limits (the request line and each
  header at most 8190 bytes, at most 32 headers), its keep-alive timer (which runs from the
  opening or the previous answer until a head is complete: the head timeout), the webhook
  handler's body timeout (answered 408), and the connection limit at accept (`LimitedSite`).
- HTTP/JSON (uvicorn with httptools, which bound neither a head's size nor any time before the
  first answer): `BoundedHttp`, uvicorn's httptools protocol with all of the above.
"""

from __future__ import annotations

import asyncio
import functools
import resource
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from meter import metrics
from meter.config import Settings

MAX_HEAD_BYTES = 16_384  # HTTP/JSON: a request's line and headers, together
MAX_LINE_BYTES = 8190  # webhooks and metrics (aiohttp): the request line, and each header
MAX_HEADERS = 32  # webhooks and metrics (aiohttp)
LISTENERS = 3  # gRPC, HTTP/JSON, webhooks and metrics
FD_SHARE = 4  # each may take a quarter of the open-file limit
MIN_SPARE_DESCRIPTORS = 64  # with every listener full: the database pool, the catalog, logs, the embedded database


@dataclass(frozen=True)
class ListenerLimits:
    max_connections: int  # per listener
    head_timeout_seconds: float
    body_timeout_seconds: float
    grpc_idle_seconds: float


def listener_limits(settings: Settings) -> ListenerLimits:
    return ListenerLimits(
        max_connections=settings.max_connections or open_file_limit() // FD_SHARE or 1,
        head_timeout_seconds=settings.head_timeout_seconds,
        body_timeout_seconds=settings.body_timeout_seconds,
        grpc_idle_seconds=settings.grpc_idle_seconds,
    )


def spare_descriptors(limits: ListenerLimits, pool_size: int) -> int:
    """The open files left once every listener is full and the database pool open."""
    return open_file_limit() - LISTENERS * limits.max_connections - pool_size


def open_file_limit() -> int:
    """The process's open-file limit (RLIMIT_NOFILE, soft)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 2**20 if soft == resource.RLIM_INFINITY else soft


def grpc_options(limits: ListenerLimits) -> list[tuple[str, int]]:
    return [
        ("grpc.max_allowed_incoming_connections", limits.max_connections),
        ("grpc.server_handshake_timeout_ms", _ms(limits.head_timeout_seconds)),
        ("grpc.max_connection_idle_ms", _ms(limits.grpc_idle_seconds)),
    ]


def aiohttp_options(limits: ListenerLimits) -> dict[str, Any]:
    """aiohttp's RequestHandler's: its keep-alive timer is armed when a connection opens and after
    each answer, and closes the connection if no complete head has arrived when it fires; after
    answering a request whose body did not all come (413, 408), it reads on for the lingering
    time (10 s by default) so that the client sees the answer: the body's time, no more."""
    return {
        "keepalive_timeout": limits.head_timeout_seconds,
        "lingering_time": limits.body_timeout_seconds,
        "max_line_size": MAX_LINE_BYTES,
        "max_field_size": MAX_LINE_BYTES,
        "max_headers": MAX_HEADERS,
    }


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _refuse(transport: asyncio.BaseTransport, listener: str) -> None:
    """A connection over the limit: closed at once (a reset), nothing read."""
    metrics.LISTENER_REFUSALS.labels(listener, "connections").inc()
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    else:
        transport.close()


class _Refused(asyncio.Protocol):
    def __init__(self, listener: str) -> None:
        self._listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _refuse(transport, self._listener)


class LimitedSite(web.BaseSite):
    """aiohttp's TCP site with the connection limit aiohttp lacks: a connection over it is given a
    protocol that closes it, in place of aiohttp's."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: ListenerLimits, listener: str) -> None:
        super().__init__(runner)
        self._host, self._port = host, port
        self._limit = limits.max_connections
        self._listener = listener

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None

        def accept() -> asyncio.Protocol:
            return server() if len(server.connections) < self._limit else _Refused(self._listener)

        self._server = await asyncio.get_running_loop().create_server(
            accept, self._host, self._port, backlog=self._backlog, reuse_address=True
        )


def bounded_http(limits: ListenerLimits, listener: str) -> Any:
    """uvicorn's `http` protocol for a listener with these limits."""
    return functools.partial(BoundedHttp, limits=limits, listener=listener)


class BoundedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the limits it lacks (uvicorn's own keep-alive timer
    starts only after a first answer and stops at the first byte of the next request, and
    httptools buffers a header of any length).

    A request's head may take MAX_HEAD_BYTES: the parser is fed at most what is left of that,
    and a head not complete by then is answered 431. The head's deadline is armed when the
    connection opens and after each answer; the body's when the head is complete; each is
    disarmed when what it waits for has arrived. A head too slow is answered 408 (or, if not one
    byte of it came, the idle connection is just closed); a body too slow closes the connection
    (its handler sees the client gone)."""

    def __init__(self, *args: Any, limits: ListenerLimits, listener: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._listener = listener
        self._head_room = MAX_HEAD_BYTES
        self._reading_head = True
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self._limits.max_connections:
            self._refused = True
            _refuse(transport, self._listener)
            return
        super().connection_made(transport)
        self._await(self._limits.head_timeout_seconds, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._await(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # A head still incomplete after its room is refused; the parser never sees more of it.
        while self._reading_head and len(data) > self._head_room:
            piece, data = data[: self._head_room], data[self._head_room :]
            self._head_room = 0
            super().data_received(piece)
            if self.transport.is_closing():
                return
            if self._reading_head:
                self._cut(431, "head_size", b"Request Header Fields Too Large")
                return
        if self._reading_head:
            self._head_room -= len(data)
        if data:
            super().data_received(data)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._await(self._limits.body_timeout_seconds, self._body_too_slow)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # The next head (pipelined, or after this answer) starts with all its room; its deadline
        # starts with the answer: meanwhile the wait is meter's, not the client's.
        self._await(None)
        self._reading_head = True
        self._head_room = MAX_HEAD_BYTES
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await(self._limits.head_timeout_seconds, self._head_too_slow)

    def _await(self, seconds: float | None, expired: Any = None) -> None:
        """Arm the one deadline of this connection (None: disarm it)."""
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None if seconds is None else self.loop.call_later(seconds, expired)

    def _head_too_slow(self) -> None:
        if self._head_room == MAX_HEAD_BYTES:
            self.transport.close()  # idle: not one byte of a request
        else:
            self._cut(408, "head_time", b"Request Timeout")

    def _body_too_slow(self) -> None:
        metrics.LISTENER_REFUSALS.labels(self._listener, "body_time").inc()
        self.transport.close()

    def _cut(self, status: int, cause: str, reason: bytes) -> None:
        """Answer `status` and close: nothing of this request reached the application (unless a
        pipelined request before it is still being answered: then only close)."""
        metrics.LISTENER_REFUSALS.labels(self._listener, cause).inc()
        self._await(None)
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % (status, reason))
        self.transport.close()
