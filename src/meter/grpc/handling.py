"""What happens around every MeterService call, in one wrapper per method built once at start:

1. the request id: the caller's `x-request-id` metadata if it sent a usable one, else a new one;
   returned in the response's trailing metadata, on errors too;
2. the drain (a stopping server refuses new calls), the caller's bearer token (one: a call with
   two authorization headers is refused), permission and rate (requests per second to the
   method), or without callers the call's Host and Origin (this machine's names only: DNS
   rebinding), and readiness (no call runs before the database is reachable and migrated);
3. the request's text fields (no NUL anywhere: `text_fields`), then the handler, under the
   caller's name (recorded on the ledger entries it writes);
4. errors: a MeterError becomes its status with ErrorInfo; anything else (a bug) is logged with its
   traceback and answered INTERNAL;
5. one log line (`meter.rpc`) and the metrics: calls and latency by method and code, refusals by
   reason.

Wrapped once at start rather than in a server interceptor: an interceptor builds a new method
handler on every call, which measured about 3 % of the server's CPU at load.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from meter import metrics
from meter.domain.addresses import is_loopback_authority, is_loopback_origin
from meter.domain.caller_rates import CallerRates
from meter.domain.callers import ANONYMOUS, Caller, Callers, act_as, acting_as
from meter.domain.errors import LoopbackOnly, MeterError, MultipleCredentials, NotReady, RateLimited
from meter.grpc.drain import Drain
from meter.grpc.errors import code_name, internal_status, to_status
from meter.grpc.text_fields import check_text_fields

log = logging.getLogger(__name__)
rpc_log = logging.getLogger("meter.rpc")

REQUEST_ID = "x-request-id"
AUTHORIZATION = "authorization"
HOST = "host"
ORIGIN = "origin"
METADATA = (AUTHORIZATION, REQUEST_ID, HOST, ORIGIN)  # what the gate reads; nothing else is passed on
_USABLE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")

S = TypeVar("S")
Handler = Callable[[Any, Any], Awaitable[Any]]


@dataclass
class Readiness:
    """Set once the database is reachable and migrated; until then calls are refused NOT_READY.
    `watchers` are told each change (a terminal shows why meter is not ready yet, then that it is)."""

    ready: bool = False
    detail: str = "waiting for the database"
    watchers: list[Callable[[Readiness], None]] = field(default_factory=list)

    def not_yet(self, detail: str) -> None:
        """Why meter is not ready; watchers hear of it when the reason changes."""
        changed = detail != self.detail
        self.detail = detail
        if changed:
            self._tell()

    def set_ready(self) -> None:
        self.ready, self.detail = True, ""
        self._tell()

    def _tell(self) -> None:
        for watcher in self.watchers:
            watcher(self)


@dataclass(frozen=True)
class Gate:
    """Who may call: `callers` configured, or None (no callers: everyone, as `anonymous`);
    `log_ok`: False logs only the calls that did not end OK (METER_RPC_LOG=failures)."""

    callers: Callers | None
    readiness: Readiness
    drain: Drain
    log_ok: bool = True
    caller_rates: CallerRates | None = None  # set when a caller has requests_per_second


def wrap_service(servicer: S, service: type, gate: Gate) -> S:
    """Wrap every RPC of `service` that `servicer` implements."""
    for name, member in vars(service).items():
        if callable(member) and not name.startswith("_"):
            handler = getattr(servicer, name)
            wrap = _handled_stream if inspect.isasyncgenfunction(handler) else _handled
            setattr(servicer, name, wrap(handler, name, gate))
    return servicer


def _handled(inner: Handler, method: str, gate: Gate) -> Handler:
    async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        call = _read_metadata(context.invocation_metadata())
        request_id = call.request_id
        caller = ANONYMOUS if gate.callers is None else ""  # "": not (yet) authenticated

        def done(code: str, reason: str = "") -> None:
            """Metrics and the log line, before the answer leaves: once a caller has its answer,
            what the call logged and counted is there to read."""
            seconds = time.perf_counter() - started
            _record(method, request, caller, code, reason, seconds, request_id, gate.log_ok or code != "OK")

        try:
            with gate.drain:
                admitted = _authenticated(gate, call, method)
                caller = admitted.name if admitted else caller
                _admit(gate, admitted, method, request)
                with acting_as(caller):
                    response = await inner(request, context)
        except MeterError as error:
            if isinstance(error, RateLimited):
                metrics.RATE_LIMITED.labels(error.limit).inc()
            done(code_name(error), error.reason)
            await context.abort_with_status(to_status(error, ((REQUEST_ID, request_id),)))
        except asyncio.CancelledError:
            done("CANCELLED")
            raise
        except Exception:
            log.exception("unhandled error in %s (request %s)", method, request_id)
            done("INTERNAL", "INTERNAL")
            await context.abort_with_status(internal_status(((REQUEST_ID, request_id),)))
        context.set_trailing_metadata(((REQUEST_ID, request_id),))
        done("OK")
        return response

    return behavior


def _authenticated(gate: Gate, call: _CallMetadata, method: str) -> Caller | None:
    """The caller its token names, if it may call the method. None: no callers are configured,
    and the call names this machine in its Host and Origin, if it has them (addresses)."""
    if call.authorizations > 1:
        raise MultipleCredentials()
    if gate.callers is not None:
        return gate.callers.admit(call.token, method)
    for header, value in call.names:
        if not (is_loopback_authority(value) if header == HOST else is_loopback_origin(value)):
            raise LoopbackOnly(header, value)
    return None


def _admit(gate: Gate, admitted: Caller | None, method: str, request: Any) -> None:
    """The caller's rate, readiness, and the request's text fields."""
    if admitted is not None and gate.caller_rates is not None:
        gate.caller_rates.admit(admitted, method)
    if not gate.readiness.ready:
        raise NotReady(gate.readiness.detail)
    check_text_fields(request)


def _handled_stream(inner: Callable[[Any, Any], AsyncGenerator[Any, None]], method: str, gate: Gate) -> Any:
    """The same steps for a server stream (WatchEvents): admitted like any call, then its messages
    passed on until it ends (a stream ends itself when the drain's `stopping` is set: it is not
    counted in flight, and would otherwise hold the stop for the whole grace). The log line and
    metrics come at its end."""

    async def behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        call = _read_metadata(context.invocation_metadata())
        request_id = call.request_id
        caller = ANONYMOUS if gate.callers is None else ""
        code, reason = "OK", ""
        try:
            with gate.drain:  # refused when stopping; not counted in flight after this
                admitted = _authenticated(gate, call, method)
                caller = admitted.name if admitted else caller
                _admit(gate, admitted, method, request)
            act_as(caller)
            async for item in inner(request, context):
                yield item
        except GeneratorExit:
            # The caller hung up while a message was on its way: the server stops iterating and
            # the generator is closed (by the event loop, in another task). Nothing to answer.
            code = "CANCELLED"
            raise
        except MeterError as error:
            code, reason = code_name(error), error.reason
            await context.abort_with_status(to_status(error, ((REQUEST_ID, request_id),)))
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception:
            log.exception("unhandled error in %s (request %s)", method, request_id)
            code, reason = "INTERNAL", "INTERNAL"
            await context.abort_with_status(internal_status(((REQUEST_ID, request_id),)))
        finally:
            seconds = time.perf_counter() - started
            _record(method, request, caller, code, reason, seconds, request_id, gate.log_ok or code != "OK")
        context.set_trailing_metadata(((REQUEST_ID, request_id),))

    return behavior


@dataclass(slots=True)
class _CallMetadata:
    """What the gate reads of a call's metadata (or an HTTP/JSON call's headers)."""

    token: str | None
    authorizations: int  # how many authorization entries it had: more than one is refused
    request_id: str
    names: tuple[tuple[str, str], ...]  # its Host and Origin headers: an HTTP/JSON call's, a gRPC-Web one's


def _read_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> _CallMetadata:
    call = _CallMetadata(None, 0, "", ())
    for key, value in metadata or ():
        if key == AUTHORIZATION:
            call.authorizations += 1
            scheme, _, credential = value.partition(" ") if isinstance(value, str) else ("", "", "")
            if scheme.lower() == "bearer":
                call.token = credential.strip()
        elif key == REQUEST_ID and isinstance(value, str) and _USABLE_REQUEST_ID.fullmatch(value):
            call.request_id = value
        elif key in (HOST, ORIGIN) and isinstance(value, str):
            call.names += ((key, value),)
    call.request_id = call.request_id or os.urandom(12).hex()
    return call


def _record(
    method: str, request: Any, caller: str, code: str, reason: str, seconds: float, request_id: str, log: bool
) -> None:
    metrics.RPCS.labels(method, code).inc()
    metrics.RPC_SECONDS.labels(method, code).observe(seconds)
    if reason and code not in ("INTERNAL", "UNAVAILABLE"):
        metrics.REJECTIONS.labels(method, reason).inc()
    if not log or not rpc_log.isEnabledFor(logging.INFO):
        return
    account = getattr(request, "account_id", "") or getattr(request, "reservation_id", "").partition("/")[0]
    rpc_log.log(
        logging.WARNING if code in ("INTERNAL", "UNKNOWN") else logging.INFO,
        "%s %s%s %.2f ms",
        method,
        code,
        f" {reason}" if reason else "",
        seconds * 1000,
        extra={
            "fields": {
                "method": method,
                "caller": caller,
                "account": account,
                "code": code,
                "reason": reason,
                "latency_ms": round(seconds * 1000, 3),
                "request_id": request_id,
            }
        },
    )
