"""The one place where errors become gRPC statuses, each with one google.rpc.ErrorInfo."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from meter.domain.errors import ErrorCategory, MeterError
from meter.grpc.drain import Drain

log = logging.getLogger(__name__)

DOMAIN = "meter"

_CODES = {
    ErrorCategory.INVALID: code_pb2.INVALID_ARGUMENT,
    ErrorCategory.NOT_FOUND: code_pb2.NOT_FOUND,
    ErrorCategory.PRECONDITION: code_pb2.FAILED_PRECONDITION,
    ErrorCategory.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    ErrorCategory.UNAVAILABLE: code_pb2.UNAVAILABLE,
}


def to_status(error: MeterError) -> grpc.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata))
    return rpc_status.to_status(status_pb2.Status(code=_CODES[error.category], message=error.message, details=[info]))


def internal_status() -> grpc.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN))
    return rpc_status.to_status(
        status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; see the server log", details=[info])
    )


S = TypeVar("S")


def translate_errors(servicer: S, service: type, drain: Drain) -> S:
    """Wrap every RPC of `service` that `servicer` implements so that a MeterError becomes its
    status and anything else (a bug) is logged with its traceback and answered INTERNAL; and so
    that `drain` knows the calls in flight and refuses new ones once the server is stopping.

    Wrapped once at start rather than in a server interceptor: an interceptor builds a new
    method handler on every call, which measured about 3 % of the server's CPU at load."""
    for name, member in vars(service).items():
        if callable(member) and not name.startswith("_"):
            setattr(servicer, name, _translating(getattr(servicer, name), name, drain))
    return servicer


def _translating(
    inner: Callable[[Any, Any], Awaitable[Any]], method: str, drain: Drain
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            with drain:
                return await inner(request, context)
        except MeterError as error:
            await context.abort_with_status(to_status(error))
        except Exception:
            log.exception("unhandled error in %s", method)
            await context.abort_with_status(internal_status())

    return behavior
