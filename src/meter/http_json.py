"""MeterService over HTTP/JSON, for runtimes that cannot speak gRPC (edge and serverless
functions): the Connect protocol (connectrpc.com) on METER_CONNECT_ADDR, so a call is one POST
of a JSON body to /meter.v1.MeterService/<Method>, as curl or fetch() sends it.

Not a second implementation: every endpoint calls the gRPC servicer's method, wrapped by the same
gate as the gRPC server's (`wrap_service` with the server's own Gate: callers and bearer tokens,
method permissions, per-caller rates, readiness, the drain, the RPC log line and metrics). The
gate speaks to a grpc.aio.ServicerContext; `_Context` gives it the three things it uses of one
(the request's metadata, the abort with a status, the trailing metadata) over a Connect request,
so a refusal is the same google.rpc.Status, turned into a Connect error with the same code and
the same ErrorInfo and RetryInfo among its details.

The endpoints are built from the contract's descriptor (every method of MeterService, its
request and response classes), not from generated Connect stubs: the stubs would be 2 400
checked-in lines, mostly clients meter does not use, for the same table of endpoints.

The ASGI server is uvicorn (with httptools, bounded by listeners.BoundedHttp), started and drained
with the gRPC server: the gate's drain refuses new calls on both and waits for those in flight on
both, then this server stops. The JSON itself is read strictly (json_codec).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from http import HTTPStatus
from typing import Any, NoReturn

import grpc
import uvicorn
from connectrpc._protocol import ConnectWireError
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import MethodDescriptor

from meter.config import ConfigError, Settings
from meter.connect_errors import connect_error, refusal
from meter.domain.addresses import host_and_port
from meter.domain.errors import InvalidField
from meter.grpc.handling import METADATA, Gate, wrap_service
from meter.grpc.servicer import MeterServicer
from meter.json_codec import JsonCodec, Utf8Only
from meter.listeners import ListenerLimits, bounded_http
from meter.service.context import Meter
from meter.v1 import meter_pb2, meter_pb2_grpc

SETTING = "METER_CONNECT_ADDR"
LISTENER = "http_json"  # as meter_listener_refusals names it
SERVICE = meter_pb2.DESCRIPTOR.services_by_name["MeterService"]

_IDEMPOTENCY = {
    descriptor_pb2.MethodOptions.IDEMPOTENCY_UNKNOWN: IdempotencyLevel.UNKNOWN,
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS: IdempotencyLevel.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT: IdempotencyLevel.IDEMPOTENT,
}


def listen_address(settings: Settings) -> str | None:
    """METER_CONNECT_ADDR, host:port, or None when it is "off"."""
    address = settings.connect_addr.strip()
    if address.lower() == "off":
        return None
    parsed = host_and_port(address)
    if parsed is None or not parsed[0]:
        raise ConfigError(f"{SETTING}={address!r} must be host:port (port 0: any free port) or off")
    return address


class _Context:
    """What the gate uses of a grpc.aio.ServicerContext, over a Connect request's context."""

    __slots__ = ("_connect", "_streaming")

    def __init__(self, connect: RequestContext[Any, Any], streaming: bool) -> None:
        self._connect = connect
        self._streaming = streaming

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        """The headers the gate reads (handling.METADATA), each as often as it was sent."""
        headers = self._connect.request_headers
        return tuple((key, value) for key in METADATA for value in headers.getall(key))

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        """A unary call's x-request-id as a response header (what an HTTP client reads); a
        stream's in its end message (its headers are gone by then)."""
        target = self._connect.response_trailers if self._streaming else self._connect.response_headers
        for key, value in metadata:
            target[key] = value

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        """The gate's refusal, as a Connect error (connect_errors)."""
        error, metadata = connect_error(status)
        self.set_trailing_metadata(metadata)
        raise error


def _endpoint(method: MethodDescriptor, handler: Callable[..., Any]) -> Any:
    """One method's endpoint: the gate-wrapped servicer method, called with a `_Context`."""
    info = MethodInfo(
        name=method.name,
        service_name=SERVICE.full_name,
        input=message_factory.GetMessageClass(method.input_type),
        output=message_factory.GetMessageClass(method.output_type),
        idempotency_level=_IDEMPOTENCY[method.GetOptions().idempotency_level],
        stream_type=StreamType.SERVER_STREAM if method.server_streaming else StreamType.UNARY,
    )
    if method.server_streaming:

        def stream(request: Any, connect: RequestContext[Any, Any]) -> AsyncIterator[Any]:
            return handler(request, _Context(connect, streaming=True))

        return Endpoint.server_stream(info, stream)

    async def unary(request: Any, connect: RequestContext[Any, Any]) -> Any:
        return await handler(request, _Context(connect, streaming=False))

    return Endpoint.unary(info, unary)


def endpoints(servicer: meter_pb2_grpc.MeterServiceServicer) -> dict[str, Any]:
    """/meter.v1.MeterService/<Method> for every method of the contract (client and bidi streams
    would need their own adapter: the contract has none)."""
    return {
        f"/{SERVICE.full_name}/{method.name}": _endpoint(method, getattr(servicer, method.name))
        for method in SERVICE.methods
        if not method.client_streaming
    }


class MeterApplication(ConnectASGIApplication[meter_pb2_grpc.MeterServiceServicer]):
    """MeterService as an ASGI application (Connect protocol, JSON and binary protobuf)."""

    def __init__(self, meter: Meter, gate: Gate) -> None:
        servicer = wrap_service(MeterServicer(meter, gate.drain.stopping), meter_pb2_grpc.MeterServiceServicer, gate)
        super().__init__(
            service=servicer,
            endpoints=endpoints,
            interceptors=(Utf8Only(),),
            codecs=(JsonCodec(), google_protobuf_binary_codec()),
        )

    @property
    def path(self) -> str:
        return f"/{SERVICE.full_name}"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """connectrpc answers a request it cannot route or read (no such method: 404; not a POST:
        405; a body it has no codec for: 415) with an empty body. meter's answer says what to
        send instead, as a Connect error with meter's ErrorInfo, as every other refusal."""
        if scope.get("type") != "http":
            return await super().__call__(scope, receive, send)
        refused: bytes | None = None

        async def sending(message: Any) -> None:
            nonlocal refused
            if (
                message["type"] == "http.response.start"
                and not _has_body(message)
                and (refused := _empty_refusal(scope, message["status"]))
            ):
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _BODY_HEADERS]
                message = {**message, "headers": [*kept, (b"content-type", b"application/json")]}
            elif message["type"] == "http.response.body" and refused is not None:
                if not message.get("body") and not message.get("more_body"):  # the whole body, and empty
                    message = {**message, "body": refused}
                refused = None  # a body of its own is left as it is
            await send(message)

        await super().__call__(scope, receive, sending)


_BODY_HEADERS = (b"content-type", b"content-length")


def _has_body(start: Any) -> bool:
    """A response that says its length, and it is not 0 (a refusal of meter's, already written)."""
    return any(k.lower() == b"content-length" and v != b"0" for k, v in start.get("headers", []))


def _empty_refusal(scope: Any, status: int) -> bytes | None:
    """The body of a refusal connectrpc sends empty, as a Connect error (None for any other)."""
    if status == HTTPStatus.NOT_FOUND:
        path = scope.get("path", "")
        error = InvalidField("path", f"{path!r} is not a method: POST to /{SERVICE.full_name}/<Method>")
    elif status == HTTPStatus.METHOD_NOT_ALLOWED:
        error = InvalidField("method", f"{scope.get('method', '')} is not served: send a POST")
    elif status == HTTPStatus.UNSUPPORTED_MEDIA_TYPE:
        sent = dict(scope.get("headers", [])).get(b"content-type", b"").decode("latin-1")
        problem = "is missing" if not sent else f"{sent!r} is not one meter reads"
        error = InvalidField("content-type", f"{problem}: send application/json (or application/proto)")
    else:
        return None
    # connectrpc's own writer of a Connect error body (what every other refusal is written with).
    return ConnectWireError.from_exception(refusal(error)).to_json_bytes()


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """None: `meter serve` handles SIGTERM itself, and stops this server in its own order
        (uvicorn's handlers would replace meter's and stop it alone)."""
        yield


class HttpJsonServer:
    """Listens on `address` (bound here, so a taken address fails before anything starts, and
    port 0 gets a free port), with TLS from the same METER_TLS_* files as gRPC."""

    def __init__(self, meter: Meter, address: str, gate: Gate, settings: Settings, limits: ListenerLimits) -> None:
        host, port = host_and_port(address) or ("", 0)
        family, kind, proto, _, where = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self._socket = socket.socket(family, kind, proto)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind(where)
        except OSError:
            self._socket.close()
            raise
        bound = self._socket.getsockname()
        self.address = f"[{bound[0]}]:{bound[1]}" if family == socket.AF_INET6 else f"{bound[0]}:{bound[1]}"
        self.tls = settings.tls_cert_file is not None
        config = uvicorn.Config(
            MeterApplication(meter, gate),
            lifespan="off",
            http=bounded_http(limits, LISTENER),  # httptools, with the listener's limits
            timeout_keep_alive=limits.head_timeout_seconds,  # type: ignore[arg-type]  # uvicorn takes a float
            ws="none",
            log_config=None,  # meter's logging, as configured
            access_log=False,  # the gate logs every call (meter.rpc)
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 1,
            **_tls(settings),
        )
        config.load()  # here, so that an unreadable certificate fails the start
        # uvicorn's own INFO lines ("Started server process", "Waiting for connections to close")
        # tell what meter logs itself; its warnings and errors still come through.
        uvicorn_log = logging.getLogger("uvicorn.error")
        if uvicorn_log.level == logging.NOTSET:
            uvicorn_log.setLevel(logging.WARNING)
        self._server = _Uvicorn(config)
        self._serving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._serving = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="http-json")
        while not self._server.started:
            if self._serving.done():
                self._serving.result()
                raise OSError(f"HTTP/JSON server on {self.address} stopped at start")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """After the gate's drain (GrpcServer.stop): no call is in flight; stop listening, close
        the idle connections and let the others finish their response."""
        if self._serving is None:
            self._socket.close()
            return
        self._server.should_exit = True
        await self._serving


def _tls(settings: Settings) -> dict[str, Any]:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return {}
    files: dict[str, Any] = {"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file)}
    if settings.tls_client_ca_file is not None:
        files |= {"ssl_ca_certs": str(settings.tls_client_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return files
