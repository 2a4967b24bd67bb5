"""Page tokens: where a listing stopped and which listing it was, signed so that a client can
hand a token back but not forge or alter one (an altered token could page through another
account's ledger, or skip the filters it was issued for)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import asdict, dataclass, replace

from meter.domain.errors import InvalidField

MAX_TOKEN_LENGTH = 1024


@dataclass(frozen=True)
class Cursor:
    """The listing (account and filters) and the last entry returned."""

    account_id: str
    kind: str
    start: str
    end: str
    after: int


def page_size(field: str, value: int, *, default: int, maximum: int) -> int:
    """A list's page size: 0 means the default; anything else must be 1..maximum."""
    size = value or default
    if not 1 <= size <= maximum:
        raise InvalidField(field, f"must be 1-{maximum} (0: {default})")
    return size


def encode(cursor: Cursor, key: bytes) -> str:
    body = base64.urlsafe_b64encode(json.dumps(asdict(cursor), separators=(",", ":")).encode()).decode()
    return f"{body}.{_mac(body, key)}"


def decode(token: str, key: bytes, expected: Cursor) -> int:
    """The entry to continue after, if `token` was issued for the listing `expected` describes
    (its `after` is ignored)."""
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1 or not token.isascii():
        raise InvalidField("page_token", "is not a token this service issued")
    body, mac = token.split(".")
    if not hmac.compare_digest(mac, _mac(body, key)):
        raise InvalidField("page_token", "is not a token this service issued (or was altered)")
    try:
        cursor = Cursor(**json.loads(base64.urlsafe_b64decode(body)))
    except (ValueError, TypeError) as exc:
        raise InvalidField("page_token", "is not a token this service issued") from exc
    if replace(cursor, after=expected.after) != expected:
        raise InvalidField("page_token", "was issued for another account or other filters")
    return cursor.after


def _mac(body: str, key: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, body.encode(), hashlib.sha256).digest()).decode().rstrip("=")
