"""Where balance events are sent (webhook endpoints), and an operator's view of their deliveries:
what is pending or dead, and sending again one event, a range of an account's events, or
everything an endpoint gave up on."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from dataclasses import dataclass

from meter.domain import ids, pages
from meter.domain.errors import InvalidField
from meter.domain.urls import hostname, http_url, non_public
from meter.domain.webhook_deliveries import (
    DeliveryState,
    DeliveryStatus,
    Endpoint,
    endpoint_id,
    event_types,
    new_secret,
)
from meter.service.context import Meter
from meter.service.ports import WebhookDeliveries

log = logging.getLogger(__name__)

MAX_LISTED = 1000
RESOLVE_SECONDS = 2.0  # looking the host up, for the warning only: a name that does not resolve now is accepted


@dataclass(frozen=True)
class NewEndpoint:
    endpoint: Endpoint
    secret: str  # shown once, here: the receiver verifies signatures with it
    warnings: tuple[str, ...] = ()  # said to the operator, who decides


async def add_endpoint(meter: Meter, *, name: str, url: str, types: list[str]) -> NewEndpoint:
    """Events from now on are sent to it (earlier ones on a redeliver of their range). A host that
    is not public is accepted and warned about (logged, and in the answer)."""
    wanted = event_types(types)
    endpoint_id(name)
    http_url(url)
    warnings = await host_warnings(hostname(url))
    secret = new_secret()

    async def work(store: WebhookDeliveries) -> NewEndpoint:
        endpoint = Endpoint(name, url, wanted, paused=False, created_at=await store.now())
        if not await store.insert_endpoint(endpoint, secret):
            raise InvalidField("endpoint_id", f"{name!r} exists already")
        return NewEndpoint(endpoint, secret, warnings)

    added = await meter.storage.transaction(work)
    for warning in warnings:
        log.warning("webhook endpoint %s: %s", name, warning)
    return added


async def host_warnings(host: str) -> tuple[str, ...]:
    """What is not public about a host: the address it is, or each one its name resolves to now."""
    literal = non_public(host)
    if literal is not None:
        return (f"{host} is {literal}, not a public one: events go inside this network",)
    try:
        found = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_SECONDS
        )
    except (OSError, TimeoutError):
        return ()  # not resolvable now: each attempt's error will say so
    addresses = dict.fromkeys(str(info[4][0]) for info in found)
    return tuple(
        f"{host} resolves to {address}, {what}, not a public one: events go inside this network"
        for address in addresses
        if (what := non_public(address)) is not None
    )


async def list_endpoints(meter: Meter) -> list[Endpoint]:
    async def work(store: WebhookDeliveries) -> list[Endpoint]:
        return await store.endpoints()

    return await meter.storage.transaction(work)


async def pause_endpoint(meter: Meter, *, name: str, paused: bool) -> None:
    """A paused endpoint is sent nothing; its events keep arriving as pending deliveries, sent in
    order once it is resumed (nothing is lost while it is paused)."""

    async def work(store: WebhookDeliveries) -> None:
        if not await store.pause_endpoint(endpoint_id(name), paused):
            raise InvalidField("endpoint_id", f"no endpoint {name!r}")

    await meter.storage.transaction(work)


async def remove_endpoint(meter: Meter, *, name: str) -> int:
    """The endpoint and every delivery to it, sent or not (their count)."""

    async def work(store: WebhookDeliveries) -> int:
        dropped = await store.remove_endpoint(endpoint_id(name))
        if dropped is None:
            raise InvalidField("endpoint_id", f"no endpoint {name!r}")
        return dropped

    return await meter.storage.transaction(work)


async def list_deliveries(
    meter: Meter,
    *,
    name: str | None = None,
    status: DeliveryStatus | None = None,
    account_id: str | None = None,
    limit: int = 100,
) -> list[DeliveryState]:
    size = pages.page_size("limit", limit, default=100, maximum=MAX_LISTED)

    async def work(store: WebhookDeliveries) -> list[DeliveryState]:
        return await store.delivery_states(name and endpoint_id(name), status, account_id, size)

    return await meter.storage.transaction(work)


async def redeliver(
    meter: Meter,
    *,
    name: str,
    event_id: str | None = None,
    account_id: str | None = None,
    first: int = 1,
    last: int | None = None,
    dead: bool = False,
) -> int:
    """Pending again from a first attempt, under the same webhook-id: one event, an account's
    events from `first` to `last` (those the endpoint wants), or every dead delivery."""
    endpoint_id(name)
    if sum((event_id is not None, account_id is not None, dead)) != 1:
        raise InvalidField("redeliver", "give one of: an event id, an account (with a range), or dead")

    async def work(store: WebhookDeliveries) -> int:
        now = await store.now()
        if not any(e.endpoint_id == name for e in await store.endpoints()):
            raise InvalidField("endpoint_id", f"no endpoint {name!r}")
        if dead:
            return await store.redeliver_dead(name, now)
        if event_id is not None:
            found = await store.event_position(_uuid(event_id))
            if found is None:
                raise InvalidField("event_id", f"no balance event {event_id!r}")
            account, sequence = found
            return await store.redeliver(name, account, sequence, sequence, now)
        assert account_id is not None
        return await store.redeliver(name, ids.account_id(account_id), first, last or 2**62, now)

    return await meter.storage.transaction(work)


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidField("event_id", "a balance event's id (a UUID)") from None
