"""Every text field of every RPC refuses the NUL character, in one place, before anything runs.

PostgreSQL cannot store NUL in text. Before the check was one validator, fields were fixed one by
one as the hostile-input test found them, and the rest answered INTERNAL (through the webhook
adapter: a 503 that Stripe retried for days). The fields here are drawn from the contract, so a
field added later is covered without touching this file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.v1 import meter_pb2 as pb
from support import RunningMeter, expect_error, fingerprint, funded_account

NUL_TEXT = "a\x00b"
METHODS = pb.DESCRIPTOR.services_by_name["MeterService"].methods


def _text_paths(descriptor: Descriptor, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, how) of each place text can go: a string field, a map's key or value."""
    for field in descriptor.fields:
        path = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            yield path, "list" if field.is_repeated else "text"
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            yield path, "key"
            if field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_STRING:
                yield path, "value"
        elif field.message_type is not None and not prefix:  # one level of nesting is what we have
            yield from _text_paths(field.message_type, f"{path}[0]." if field.is_repeated else f"{path}.")


CASES = [(method, path, how) for method in METHODS for path, how in _text_paths(method.input_type)]


def _request(method: Any, path: str, how: str, account: str) -> Any:
    request = getattr(pb, method.input_type.name)()
    if "account_id" in method.input_type.fields_by_name and path != "account_id":
        request.account_id = account  # so the NUL is the only thing wrong
    *parents, name = path.split(".")
    target = request
    for parent in parents:
        name_part, _, _ = parent.partition("[")
        target = getattr(target, name_part).add() if parent.endswith("[0]") else getattr(target, parent)
    if how == "text":
        setattr(target, name, NUL_TEXT)
    elif how == "list":
        getattr(target, name).append(NUL_TEXT)
    elif how == "key":
        getattr(target, name)[NUL_TEXT] = "v"
    else:
        getattr(target, name)["k"] = NUL_TEXT
    return request


def test_the_contract_has_text_fields_on_every_mutating_rpc() -> None:
    covered = {method.name for method, _, _ in CASES}
    assert {"Reserve", "Commit", "CreditPurchase", "SetPlan", "Adjust", "ReverseCredit"} <= covered
    assert ("source_event.type", "text") in {(p, h) for m, p, h in CASES if m.name == "CreditPurchase"}


@pytest.mark.parametrize(("method", "path", "how"), CASES, ids=lambda c: getattr(c, "name", c))
async def test_nul_in_any_text_field_is_invalid_field_and_changes_nothing(
    meter: RunningMeter, engine: AsyncEngine, method: Any, path: str, how: str
) -> None:
    account = await funded_account(meter.stub, 1000)
    before = await fingerprint(engine)
    call = getattr(meter.stub, method.name)
    request = _request(method, path, how, account)
    info = await expect_error(call(request), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert info.metadata["field"] == path
    assert "NUL" in info.metadata["problem"]
    assert await fingerprint(engine) == before
