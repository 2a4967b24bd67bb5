"""Network addresses as meter reads them: a listen address (`host:port`), and whether a host is
this machine.

Without callers configured, meter is for this machine alone, and that one rule is applied twice:
it listens on loopback only (bootstrap.check_exposure), and it takes a call only when the names
the call carries for where it is going (`Host`) and where it comes from (`Origin`) are this
machine's (the gate). The second is what stops DNS rebinding: a web page on
`rebind.attacker.example` whose name is made to resolve to 127.0.0.1 reaches the loopback
listener, but its requests carry `Host: rebind.attacker.example` and the attacker's Origin.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from meter.domain.digits import whole_number

MAX_PORT = 65535
LOCALHOST = "localhost"


def host_and_port(address: str) -> tuple[str, int] | None:
    """`host:port` (`[v6]:port` for IPv6) as the host, without brackets, and the port; None when
    the port is not a number from 0 to 65535 written in ASCII digits."""
    host, _, port = address.rpartition(":")
    number = whole_number(port, MAX_PORT)
    return None if number is None else (host.strip("[]"), number)


def is_loopback(host: str) -> bool:
    """`localhost`, or an address of 127.0.0.0/8 or ::1."""
    if host.lower().rstrip(".") == LOCALHOST:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_authority(value: str) -> bool:
    """A `Host` header (an HTTP/2 `:authority`): a loopback host, with or without a port."""
    if value.startswith("["):
        host, bracket, port = value[1:].partition("]")
        if not bracket or port[:1] not in ("", ":"):
            return False
        port = port[1:]
    else:
        host, _, port = value.partition(":")
    return (not port or whole_number(port, MAX_PORT) is not None) and is_loopback(host)


def is_loopback_origin(value: str) -> bool:
    """An `Origin` header: `scheme://host[:port]` on a loopback host (`null`, sent by sandboxed
    and file pages, is not)."""
    try:
        origin = urlsplit(value)
        return origin.scheme in ("http", "https") and origin.hostname is not None and is_loopback(origin.hostname)
    except ValueError:
        return False
