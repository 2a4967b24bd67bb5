"""Identifiers: accounts, idempotency keys and reservation ids.

A reservation id names its account (`<account_id>/<hold>`), so that Commit, Release and Extend
touch only that account's rows: every transaction stays on one account, which keeps the schema
distributable by account_id.
"""

from __future__ import annotations

import re
import uuid

from meter.domain.errors import InvalidField

_ACCOUNT_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
_KEY = re.compile(r"[!-~]{1,128}")  # printable ASCII, no spaces
_HOLD = re.compile(r"[0-9a-f]{32}")
_SEPARATOR = "/"  # a reservation id is composed by meter_reservation_id (storage/sql); read here


def account_id(value: str, field: str = "account_id") -> str:
    if not value:
        raise InvalidField(field, "is required")
    if not _ACCOUNT_ID.fullmatch(value):
        raise InvalidField(field, "must be 1-128 characters of [A-Za-z0-9._:@-]")
    return value


def idempotency_key(value: str, field: str) -> str:
    """Caller-chosen keys (request_id, payment_ref): 1-128 printable ASCII characters."""
    if not value:
        raise InvalidField(field, "is required")
    if not _KEY.fullmatch(value):
        raise InvalidField(field, "must be 1-128 printable ASCII characters without spaces")
    return value


def new_hold_id() -> str:
    return uuid.uuid4().hex


def reservation_account(reservation_id: str) -> str:
    """The account a reservation id names."""
    if not reservation_id:
        raise InvalidField("reservation_id", "is required")
    account, sep, hold = reservation_id.rpartition(_SEPARATOR)
    if not sep or not _ACCOUNT_ID.fullmatch(account) or not _HOLD.fullmatch(hold):
        raise InvalidField("reservation_id", "is not a reservation id returned by Reserve")
    return account


def hold_id(reservation_id: str) -> str:
    """The hold part of a reservation id already checked by reservation_account."""
    return reservation_id.rpartition(_SEPARATOR)[2]
