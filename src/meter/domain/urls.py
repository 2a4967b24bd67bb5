"""What meter takes as an http(s) URL from outside (a Checkout Session's return URLs; a webhook
endpoint's address): the whole text, exactly as given, is the URL. urllib's urlsplit strips
leading spaces and control characters and drops tabs and newlines anywhere, so " https://x\\t"
would pass and be stored and used raw: text that is not one is refused, not tidied."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from meter.domain.errors import InvalidField

MAX_URL_LENGTH = 2048


def http_url(field: str, value: str, *, max_length: int = MAX_URL_LENGTH) -> SplitResult:
    """The URL's parts; INVALID_FIELD unless it is http or https with a host (and a port in range),
    without credentials, spaces or control characters, at most `max_length` characters."""
    wanted = (
        "must be an http(s) URL with a host, without credentials, spaces or control characters, "
        f"at most {max_length} characters"
    )
    if not value or len(value) > max_length or any(c.isspace() or not c.isprintable() for c in value):
        raise InvalidField(field, wanted)
    parts = urlsplit(value)
    try:
        port_ok = parts.port is None or 0 < parts.port
    except ValueError:  # not a number, or past 65535
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or "@" in parts.netloc:
        raise InvalidField(field, wanted)
    return parts
