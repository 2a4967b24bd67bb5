"""Strict readers for the fields of a Stripe object.

An event is authentic once its signature verifies, but its fields can still be anything JSON
allows: a `tokens` of "²" (which `str.isdigit` accepts), thirty digits, an amount of 10^30 or
`true`, a timestamp in the year 33658. Each reader here either returns a value meter can use or
raises Malformed with a reason; the mapping turns that into a rejected event (answered 2xx, since
no redelivery of the same body can help), never into a crash.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from meter.domain.digits import whole_number

# Amounts in a currency's minor unit, as meter stores them (bigint with room to add).
MAX_MINOR = 2**62
# Stripe's timestamps are seconds since 1970; anything outside these years is not a real one.
EARLIEST = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp())
LATEST = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())
MAX_DIGITS = 10**18 - 1  # 18 digits: fits in int64


class Malformed(ValueError):
    """An authentic event whose fields meter cannot use; the message says which and why."""


def mapping(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """A nested object; {} when absent or null."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Malformed(f"{key} must be an object")
    return value


def text(obj: dict[str, Any], key: str) -> str:
    """A string field; "" when absent or null."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Malformed(f"{key} must be a string")
    if "\x00" in value:
        raise Malformed(f"{key} may not contain the NUL character")
    return value


def ref(obj: dict[str, Any], key: str) -> str:
    """The id of a related object, whether Stripe sent the id or the expanded object."""
    value = obj.get(key)
    if isinstance(value, dict):
        return text(value, "id")
    return text(obj, key)


def whole(obj: dict[str, Any], key: str, *, maximum: int = MAX_MINOR) -> int:
    """A whole number from 0 to `maximum` (a JSON true is not 1)."""
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise Malformed(f"{key} must be a whole number from 0 to {maximum}")
    return value


def signed(obj: dict[str, Any], key: str) -> int:
    """A whole number from -MAX_MINOR to MAX_MINOR (a line's amount is negative for a credit)."""
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not -MAX_MINOR <= value <= MAX_MINOR:
        raise Malformed(f"{key} must be a whole number from -{MAX_MINOR} to {MAX_MINOR}")
    return value


def digits(obj: dict[str, Any], key: str) -> int:
    """A whole number written as a string of ASCII digits (Stripe metadata values are strings)."""
    value = obj.get(key)
    number = whole_number(value, MAX_DIGITS) if isinstance(value, str) else None
    if number is None:
        raise Malformed(f"{key} must be a string of 1 to 18 ASCII digits")
    return number


def timestamp(obj: dict[str, Any], key: str) -> datetime:
    """A Stripe timestamp, between the years 2000 and 2100."""
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not EARLIEST <= value < LATEST:
        raise Malformed(f"{key} must be a Unix time between the years 2000 and 2100")
    return datetime.fromtimestamp(value, UTC)


def period(obj: dict[str, Any], start: str, end: str) -> tuple[datetime, datetime] | None:
    """[start, end) when both are present; None when either is absent or the span is empty
    (Stripe gives one-off invoice items a period that starts and ends at the same second)."""
    if obj.get(start) is None or obj.get(end) is None:
        return None
    began, ended = timestamp(obj, start), timestamp(obj, end)
    return (began, ended) if began < ended else None


def listed(obj: dict[str, Any], key: str, *, limit: int = 100) -> list[dict[str, Any]]:
    """The objects of a Stripe list (`{"object": "list", "data": [...]}`), at most `limit`."""
    data = mapping(obj, key).get("data")
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise Malformed(f"{key}.data must be a list of objects")
    if len(data) > limit:
        raise Malformed(f"{key} has more than {limit} entries")
    return data
