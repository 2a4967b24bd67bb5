"""The one place where errors become gRPC statuses, each with one google.rpc.ErrorInfo."""

from __future__ import annotations

import math
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from meter.domain.errors import ErrorCategory, MeterError

DOMAIN = "meter"

_CODES = {
    ErrorCategory.INVALID: code_pb2.INVALID_ARGUMENT,
    ErrorCategory.NOT_FOUND: code_pb2.NOT_FOUND,
    ErrorCategory.PRECONDITION: code_pb2.FAILED_PRECONDITION,
    ErrorCategory.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    ErrorCategory.UNAVAILABLE: code_pb2.UNAVAILABLE,
    ErrorCategory.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    ErrorCategory.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    ErrorCategory.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
}
_NAMES = {category: code_pb2.Code.Name(code) for category, code in _CODES.items()}

Metadata = tuple[tuple[str, str], ...]


def code_name(error: MeterError) -> str:
    """The status code's name, as metrics and logs show it (e.g. FAILED_PRECONDITION)."""
    return _NAMES[error.category]


def to_status(error: MeterError, metadata: Metadata = ()) -> grpc.Status:
    """`metadata` is sent with the status (trailing metadata), next to the ErrorInfo; an error
    that knows when a retry can succeed also carries google.rpc.RetryInfo."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata))
    details = [info]
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(0, math.ceil(error.retry_after * 1e9)))
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(retry)
    status = status_pb2.Status(code=_CODES[error.category], message=error.message, details=details)
    return _with(rpc_status.to_status(status), metadata)


def internal_status(metadata: Metadata = ()) -> grpc.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN))
    status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; see the server log", details=[info])
    return _with(rpc_status.to_status(status), metadata)


def _with(status: grpc.Status, metadata: Metadata) -> grpc.Status:
    if not metadata:
        return status
    return _Status(status.code, status.details, tuple(status.trailing_metadata) + metadata)


class _Status(grpc.Status):
    """grpc.Status is an interface with these three attributes (grpc_status builds its own)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[Any, ...]) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata
