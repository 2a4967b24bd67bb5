"""Every text field of every request, checked in one place before any use case runs.

PostgreSQL's text and jsonb cannot hold the NUL character: a request carrying one would fail at
its first write, as INTERNAL, after it had been half processed (and, through the webhook adapter,
as a 503 that Stripe retries for days). So each string of a request, at any depth (nested
messages, repeated fields, map keys and values), is refused here with INVALID_FIELD naming it.
protobuf has already refused strings that are not UTF-8. Bytes fields (raw webhook payloads) may
hold anything.

The walk over a message type's fields is worked out once per type, so the check costs a few
attribute reads per call.
"""

from __future__ import annotations

import enum
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from meter.domain.errors import InvalidField

NUL = "\x00"


class _Kind(enum.Enum):
    TEXT = 1
    TEXTS = 2
    TEXT_MAP = 3  # a map whose keys are strings (and whose values are strings, or not text)
    MESSAGE = 4
    MESSAGES = 5


# Module names for the members: the check runs on every call, and these are cheaper to look up.
TEXT, TEXTS, TEXT_MAP, MESSAGE, MESSAGES = _Kind

_Step = tuple[str, _Kind, bool]  # (field name, kind, whether a map's values are strings)
_plans: dict[Descriptor, tuple[_Step, ...]] = {}


def check_text_fields(message: Any, path: str = "") -> None:
    """Raise InvalidField for the first string field of `message` that contains NUL."""
    for name, kind, text_values in _plan(message.DESCRIPTOR):
        value = getattr(message, name)
        if kind is TEXT:
            if NUL in value:
                raise _refused(path + name)
        elif kind is TEXTS:
            if any(NUL in item for item in value):
                raise _refused(path + name)
        elif kind is TEXT_MAP:
            if value and any(NUL in key or (text_values and NUL in item) for key, item in value.items()):
                raise _refused(path + name)
        elif kind is MESSAGE:
            if message.HasField(name):
                check_text_fields(value, f"{path}{name}.")
        else:
            for index, item in enumerate(value):
                check_text_fields(item, f"{path}{name}[{index}].")


def _refused(field: str) -> InvalidField:
    return InvalidField(field, "may not contain the NUL character")


def _plan(descriptor: Descriptor) -> tuple[_Step, ...]:
    plan = _plans.get(descriptor)
    if plan is None:
        plan = _plans[descriptor] = tuple(step for f in descriptor.fields if (step := _step(f)) is not None)
    return plan


def _step(field: FieldDescriptor) -> _Step | None:
    if field.type == FieldDescriptor.TYPE_STRING:
        return field.name, _Kind.TEXTS if field.is_repeated else _Kind.TEXT, False
    entry = field.message_type
    if field.type != FieldDescriptor.TYPE_MESSAGE or entry is None:
        return None
    if entry.GetOptions().map_entry:
        key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
        if key.type != FieldDescriptor.TYPE_STRING:
            return None  # no map of ours has non-text keys with text values
        return field.name, _Kind.TEXT_MAP, value.type == FieldDescriptor.TYPE_STRING
    if not _has_text(entry, set()):
        return None  # Timestamp, Date, ...: nothing to look at
    return field.name, _Kind.MESSAGES if field.is_repeated else _Kind.MESSAGE, False


def _has_text(descriptor: Descriptor, seen: set[str]) -> bool:
    if descriptor.full_name in seen:
        return False
    seen.add(descriptor.full_name)
    return any(
        f.type == FieldDescriptor.TYPE_STRING or (f.message_type is not None and _has_text(f.message_type, seen))
        for f in descriptor.fields
    )
