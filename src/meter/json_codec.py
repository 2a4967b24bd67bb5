"""Connect's JSON (application/json) for HTTP/JSON callers, who read and write it by hand, so a
request means one thing or is refused before it reaches the gate, with meter's ErrorInfo
(INVALID_FIELD, naming the field) like every other refusal:

- a field the request type does not have is refused, not ignored (a misspelt
  `max_output_token` would otherwise hold less than the call may use);
- a field given twice, under the same name or under both of its names (`account_id` and
  `accountId`), is refused: protobuf's reader keeps the last, and a gateway that authorised on
  the first would have seen another account;
- a 64-bit integer sent as a string is ASCII digits (digits: protobuf's reader uses int(), which
  takes "1_0" and full-width digits), a time is ASCII;
- the body is UTF-8 (RFC 8259, and the Connect protocol): a content type naming another charset
  is refused rather than read as UTF-8.

Every field is answered, zeros included (proto3 JSON leaves them out, and `balance.available`
would be undefined rather than 0 in JavaScript), and whole numbers in an event's `data` are
answered as integers, as the webhook body gives them (protobuf's Struct holds every number as a
double and would write 1000000.0). Field names are accepted as in the .proto (max_output_tokens)
or in JSON form (maxOutputTokens); int64 values are answered as strings, and accepted as numbers
or strings.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any, cast

from connectrpc.request import RequestContext
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from meter.connect_errors import refusal
from meter.domain.balance_events import whole_numbers
from meter.domain.digits import is_decimal
from meter.domain.errors import InvalidField

BODY = "body"
CONTENT_TYPE = "content-type"
_INTEGERS = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_TEXT_TIMES = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration"})
_STRUCT = "google.protobuf.Struct"


class JsonCodec:
    """connectrpc's codec for application/json (and application/connect+json streams)."""

    def name(self) -> str:
        return "json"

    def encode(self, message: Message) -> bytes:
        fields = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
        if _holds_struct(message.DESCRIPTOR):
            fields = whole_numbers(fields)
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, data: bytes | bytearray, message_class: type[Message]) -> Message:
        try:
            fields = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_object)
        except InvalidField as invalid:
            raise refusal(invalid) from None
        except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, thousands of digits or brackets
            raise refusal(InvalidField(BODY, f"is not a JSON object in UTF-8: {error}")) from None
        if not isinstance(fields, dict):
            raise refusal(InvalidField(BODY, "is not a JSON object"))
        try:
            message = message_class()
            _check(fields, cast(Descriptor, message.DESCRIPTOR), "")
            json_format.ParseDict(fields, message)
        except InvalidField as invalid:
            raise refusal(invalid) from None
        except (json_format.ParseError, RecursionError) as error:
            raise refusal(InvalidField(_culprit(fields, message_class), str(error))) from None
        return message


class Utf8Only:
    """A Connect metadata interceptor, run before the body is read: refuses a content type that
    names another charset than UTF-8 (JSON is UTF-8; the body would be read as such anyway)."""

    async def on_start(self, ctx: RequestContext[Any, Any]) -> None:
        content_type = ctx.request_headers.get(CONTENT_TYPE, "")
        for parameter in content_type.split(";")[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
                raise refusal(InvalidField(CONTENT_TYPE, f"names charset {value.strip()!r}: meter reads UTF-8 only"))

    async def on_end(self, token: None, ctx: RequestContext[Any, Any], error: Exception | None, /) -> None:
        return


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Every JSON object of a body: a key given twice is refused (json keeps the last)."""
    fields = dict(pairs)
    if len(fields) != len(pairs):
        keys = [key for key, _ in pairs]
        raise InvalidField(next(key for at, key in enumerate(keys) if key in keys[:at]), "is given twice")
    return fields


def _check(fields: dict[str, Any], descriptor: Descriptor, path: str) -> None:
    """What protobuf's reader would let through: a field under both its names, an unknown one,
    integers and times not written in ASCII; in nested messages too."""
    named: dict[str, str] = {}
    for key, value in fields.items():
        field = descriptor.fields_by_name.get(key) or _by_json_name(descriptor).get(key)
        where = f"{path}{key}"
        if field is None:
            raise InvalidField(where, f"is not a field of {descriptor.name}")
        if field.name in named:
            raise InvalidField(f"{path}{field.name}", f"is given twice, as {named[field.name]} and {key}")
        named[field.name] = key
        if value is not None:
            _check_value(field, value, where)


def _check_value(field: FieldDescriptor, value: Any, where: str) -> None:
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        if isinstance(value, dict):
            for key, item in value.items():
                _check_value(message.fields_by_name["value"], item, f"{where}.{key}")
        return
    if field.is_repeated and isinstance(value, list):
        for item in value:
            _check_one(field, item, where)
        return
    _check_one(field, value, where)


def _check_one(field: FieldDescriptor, value: Any, where: str) -> None:
    message = field.message_type
    if message is None:
        if field.type in _INTEGERS and isinstance(value, str) and not is_decimal(value, signed=True):
            raise InvalidField(where, "must be a whole number written in ASCII digits")
    elif message.full_name in _TEXT_TIMES:
        if isinstance(value, str) and not value.isascii():
            raise InvalidField(where, "must be written in ASCII")
    elif message.full_name != _STRUCT and isinstance(value, dict):
        _check(value, message, f"{where}.")


@cache
def _by_json_name(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    return {field.json_name: field for field in descriptor.fields}


def _culprit(fields: dict[str, Any], message_class: type[Message]) -> str:
    """The field protobuf's reader refused (its error names it only in its message): the first
    that it refuses alone. Only refused requests pay for this."""
    for key, value in fields.items():
        try:
            json_format.ParseDict({key: value}, message_class())
        except (json_format.ParseError, RecursionError):
            return key
    return BODY


@cache
def _holds_struct(descriptor: Descriptor, seen: frozenset[str] = frozenset()) -> bool:
    """A message that holds a Struct somewhere: its answers may have whole numbers as doubles."""
    for field in descriptor.fields:
        message = field.message_type
        if message is None or message.full_name in seen:
            continue
        if message.full_name == _STRUCT or _holds_struct(message, seen | {descriptor.full_name}):
            return True
    return False
