"""meter's refusals as Connect errors (HTTP/JSON): the status the gate answers gRPC with
(grpc.errors.to_status: the code, the message, the google.rpc.Status with its ErrorInfo and
RetryInfo in the trailing metadata) becomes a ConnectError with the same code, message and
details, so a caller reads the same `ErrorInfo.reason` over either protocol."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError, ErrorDetail
from google.protobuf import descriptor_pb2, duration_pb2
from google.protobuf.descriptor import Descriptor, FileDescriptor
from google.rpc import error_details_pb2, status_pb2
from protobuf import Registry
from protobuf import wkt as protobuf_py

from meter.domain.errors import MeterError
from meter.grpc.errors import to_status

_STATUS_DETAILS = "grpc-status-details-bin"
_CODES = {
    status: Code.CANCELED if status is grpc.StatusCode.CANCELLED else Code[status.name]
    for status in grpc.StatusCode
    if status is not grpc.StatusCode.OK
}


def connect_error(status: grpc.Status) -> tuple[ConnectError, list[tuple[str, str]]]:
    """The Connect error for `status`, and the rest of its trailing metadata (x-request-id)."""
    details: list[ErrorDetail] = []
    metadata = []
    for key, value in status.trailing_metadata:
        if key == _STATUS_DETAILS and isinstance(value, bytes):
            rich = status_pb2.Status.FromString(value)
            details = [_detail(detail.type_url, detail.value) for detail in rich.details]
        else:
            metadata.append((key, value))
    return ConnectError(_CODES.get(status.code, Code.UNKNOWN), status.details, details), metadata


def refusal(error: MeterError) -> ConnectError:
    """A refusal made before the gate (reading the request): the same error as the gate's."""
    return connect_error(to_status(error))[0]


def _detail(type_url: str, value: bytes) -> ErrorDetail:
    """An error detail as Connect writes it: its type and its bytes, and its JSON under "debug"
    (for a caller with no protobuf runtime: `details[0].debug.reason`). connectrpc writes that
    JSON from a protobuf-py message only; meter's are google.protobuf ones, so the detail is
    read again as a protobuf-py message of the same descriptor."""
    packed = protobuf_py.Any(type_url=type_url, value=value)
    descriptor = _detail_types().message(type_url.rpartition("/")[2])
    message = packed.unpack(descriptor) if descriptor is not None else None
    return ErrorDetail(message if message is not None else packed)


@cache
def _detail_types() -> Registry:
    """google.rpc's error details as protobuf-py descriptors, from the google.protobuf ones."""
    files = descriptor_pb2.FileDescriptorSet(
        file=[_with_json_names(f) for f in (duration_pb2.DESCRIPTOR, error_details_pb2.DESCRIPTOR)]
    )
    return protobuf_py.FileDescriptorSet.from_binary(files.SerializeToString()).to_registry()


def _with_json_names(file: FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    """The file's descriptor proto with each field's JSON name, which CopyToProto leaves out."""
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)

    def name(messages: Iterator[descriptor_pb2.DescriptorProto], descriptors: Mapping[str, Descriptor]) -> None:
        for message in messages:
            descriptor = descriptors[message.name]
            for field in message.field:
                field.json_name = descriptor.fields_by_name[field.name].json_name
            name(iter(message.nested_type), descriptor.nested_types_by_name)

    name(iter(proto.message_type), file.message_types_by_name)
    return proto
