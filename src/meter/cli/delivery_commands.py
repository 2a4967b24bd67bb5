"""`meter endpoints` and `meter deliveries`: where balance events are sent as webhooks, and what
became of each sending (pending, delivered, dead), with redelivery of one event, a range or every
dead one. They work on the database directly (METER_DATABASE_URL, or the embedded one), like
`meter audit`: an operator's tool, not a caller's RPC."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from meter.cli.direct import run_with_meter
from meter.cli.options import json_option
from meter.config import Settings
from meter.domain.balance_events import EventType
from meter.domain.urls import shown_url
from meter.domain.webhook_deliveries import DeliveryState, DeliveryStatus, Endpoint

if TYPE_CHECKING:  # the server stack is imported when a command runs, not to parse arguments
    from meter.service.context import Meter


def add(commands: Any) -> None:
    endpoints = commands.add_parser("endpoints", help="webhook endpoints that balance events are sent to")
    endpoint_commands = endpoints.add_subparsers(dest="endpoints_command", required=True)
    new = endpoint_commands.add_parser("add", help="send events to a URL; prints its signing secret once")
    new.add_argument("name", help="the endpoint's id: letters, digits, '_', '.', '-'")
    new.add_argument("url", help="http:// or https://, a host and a port; no user or password")
    new.add_argument(
        "--types",
        default="",
        help=f"comma-separated event types it wants (default: all): {', '.join(t.value for t in EventType)}",
    )
    listed_endpoints = endpoint_commands.add_parser(
        "list", help="the endpoints: active, paused, disabled (410 Gone) or backing off, and their types"
    )
    json_option(listed_endpoints, "one JSON object per line")
    for verb, what in (
        ("pause", "send it nothing; its events wait, pending"),
        ("resume", "send it what waited, in order, then the rest (also once disabled or backing off)"),
        ("remove", "forget it and every delivery to it"),
    ):
        named = endpoint_commands.add_parser(verb, help=what)
        named.add_argument("name")
    deliveries = commands.add_parser("deliveries", help="webhooks sent or to send: pending, delivered, dead")
    delivery_commands = deliveries.add_subparsers(dest="deliveries_command", required=True)
    listed = delivery_commands.add_parser("list", help="deliveries, soonest next attempt first")
    listed.add_argument("--endpoint", help="one endpoint's")
    listed.add_argument("--status", choices=[s.value for s in DeliveryStatus])
    listed.add_argument("--account", help="one account's")
    listed.add_argument("--limit", type=int, default=100)
    json_option(listed, "one JSON object per line")
    again = delivery_commands.add_parser(
        "redeliver", help="send again: an event, an account's range, or every dead one"
    )
    again.add_argument("endpoint")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("--event", help="a balance event's id (the webhook-id)")
    which.add_argument("--account", help="an account's events, from --from to --to")
    which.add_argument("--dead", action="store_true", help="every delivery the endpoint gave up on")
    again.add_argument("--from", dest="first", type=int, default=1, help="first sequence (default 1)")
    again.add_argument("--to", dest="last", type=int, help="last sequence (default: the latest)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    return run_with_meter(settings, lambda meter: _run(meter, args))


async def _run(meter: Meter, args: argparse.Namespace) -> int:
    from meter.service import webhook_endpoints

    if args.command == "endpoints":
        return await _endpoints(meter, args)
    if args.deliveries_command == "redeliver":
        count = await webhook_endpoints.redeliver(
            meter,
            name=args.endpoint,
            event_id=args.event,
            account_id=args.account,
            first=args.first,
            last=args.last,
            dead=args.dead,
        )
        print(f"meter: {count} deliveries to {args.endpoint} pending again")
        return 0
    states = await webhook_endpoints.list_deliveries(
        meter,
        name=args.endpoint,
        status=DeliveryStatus(args.status) if args.status else None,
        account_id=args.account,
        limit=args.limit,
    )
    for state in states:
        print(json.dumps(asdict(state), default=str) if args.json else _delivery_line(state))
    return 0


def _delivery_line(state: DeliveryState) -> str:
    when = state.delivered_at if state.status is DeliveryStatus.DELIVERED else state.next_attempt_at
    return (
        f"{state.status.value:9} {state.endpoint_id} {state.account_id} #{state.sequence} {state.type} "
        f"{state.event_id} attempts={state.attempts} "
        + (f"{when:%Y-%m-%dT%H:%M:%SZ}" if when else "queued")
        + (f" last error: {state.last_error}" if state.last_error else "")
    )


async def _endpoints(meter: Meter, args: argparse.Namespace) -> int:
    from meter.service import webhook_endpoints

    if args.endpoints_command == "add":
        types = [t.strip() for t in args.types.split(",") if t.strip()]
        added = await webhook_endpoints.add_endpoint(meter, name=args.name, url=args.url, types=types)
        print(f"endpoint: {added.endpoint.endpoint_id}\nurl:      {added.endpoint.url}")
        print(f"types:    {', '.join(added.endpoint.event_types) or 'all'}\nsecret:   {added.secret}")
        for warning in added.warnings:
            print(f"warning:  {warning}")
        return 0
    if args.endpoints_command in ("pause", "resume"):
        await webhook_endpoints.pause_endpoint(meter, name=args.name, paused=args.endpoints_command == "pause")
        print(f"meter: endpoint {args.name} {args.endpoints_command}d")
        return 0
    if args.endpoints_command == "remove":
        dropped = await webhook_endpoints.remove_endpoint(meter, name=args.name)
        print(f"meter: endpoint {args.name} removed, with its {dropped} deliveries")
        return 0
    for endpoint in await webhook_endpoints.list_endpoints(meter):
        shown = replace(endpoint, url=shown_url(endpoint.url))
        print(json.dumps(asdict(shown) | {"state": shown.state}, default=str) if args.json else _endpoint_line(shown))
    return 0


def _endpoint_line(endpoint: Endpoint) -> str:
    line = f"{endpoint.endpoint_id} {endpoint.url} {endpoint.state} types={','.join(endpoint.event_types) or 'all'}"
    if endpoint.disabled_at is not None:
        return f"{line} since={endpoint.disabled_at:%Y-%m-%dT%H:%M:%SZ} ({endpoint.disabled_reason})"
    if endpoint.timeouts and endpoint.backoff_until is not None:
        return f"{line} timeouts={endpoint.timeouts} until={endpoint.backoff_until:%Y-%m-%dT%H:%M:%SZ}"
    return line
