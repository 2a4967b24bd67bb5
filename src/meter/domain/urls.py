"""What meter takes as an http(s) URL from outside (a webhook endpoint's address; a Checkout
Session's return URLs), and how meter shows one.

Such a URL is `http://` or `https://`, a host (a DNS name or an IP address) and a port in 1–65535,
at most MAX_URL_LENGTH characters, and the whole text is the URL: nothing that is whitespace or a
control character (urllib's urlsplit strips leading spaces and drops tabs and newlines, so
" https://x" would otherwise pass and be stored and used raw). It carries no credentials
(`user:password@`): a password in a URL ends up in every place the URL is shown, and a webhook's
signature is what authenticates meter to a receiver. Endpoints stored before that rule keep
theirs, which the sender moves into an Authorization header; wherever meter shows such a URL
(`meter endpoints list`, a redirect's Location in an attempt's error) it is `***@` instead.

A host that is not public (loopback, link-local, private, reserved) is accepted for an endpoint,
since a receiver on the operator's own network is their choice, and said aloud (`non_public`).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

from meter.domain.errors import InvalidField

MAX_URL_LENGTH = 2048
SCHEMES = ("http", "https")
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")  # one part of a DNS name


def http_url(value: str, field: str = "url") -> str:
    """The URL as given, once it is one meter can send to (or send a customer to); else
    InvalidField on `field` naming what is wrong."""
    if not value or len(value) > MAX_URL_LENGTH or not value.isprintable() or any(c.isspace() for c in value):
        raise InvalidField(field, f"1-{MAX_URL_LENGTH} characters, without spaces or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port  # read here: a port out of range, or not a number, raises ValueError
    except ValueError as error:
        raise InvalidField(field, f"not a URL ({error})") from None
    if parts.scheme not in SCHEMES:
        raise InvalidField(field, "an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidField(field, "no user or password in the URL: it would be shown wherever the URL is")
    if not parts.hostname:
        raise InvalidField(field, "a URL with a host")
    if not _host(parts.hostname):
        raise InvalidField(field, f"{parts.hostname!r} is neither a host name nor an IP address")
    if port == 0:
        raise InvalidField(field, "a port in 1-65535")
    return value


def hostname(url: str) -> str:
    """The host of a URL http_url accepted (an IP address without brackets, or a name)."""
    return urlsplit(url).hostname or ""


def _host(host: str) -> bool:
    if _ip(host) is not None:
        return True
    try:
        name = host.encode("idna").decode("ascii")  # a name in another script: its xn-- form
    except UnicodeError:
        return False
    labels = name.removesuffix(".").split(".")
    return len(name) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.partition("%")[0])  # fe80::1%eth0: the zone is no part of it
    except ValueError:
        return None


def non_public(address: str) -> str | None:
    """Why an address is not a public one (what it is), or None when it is public."""
    ip = _ip(address)
    if ip is None:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, test in (
        ("a loopback", ip.is_loopback),
        ("a link-local", ip.is_link_local),
        ("an unspecified", ip.is_unspecified),
        ("a multicast", ip.is_multicast),
        ("a private", ip.is_private),
    ):
        if test:
            return f"{kind} address"
    return None if ip.is_global else "a reserved address"


def shown_url(url: str) -> str:
    """A URL as meter shows it: without the user or password it may carry, on one line."""
    try:
        parts = urlsplit(url)
    except ValueError:  # a Location that is no URL: its credentials-like part hidden all the same
        shown = re.sub(r"(?<=//)[^/?#]*@", "***@", url, count=1)
    else:
        if "@" in parts.netloc:
            netloc = "***@" + parts.netloc.rpartition("@")[2]
            parts = SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment)
        shown = urlunsplit(parts)
    return "".join(c if c.isprintable() else "?" for c in shown)
