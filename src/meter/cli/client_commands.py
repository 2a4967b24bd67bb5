"""The CLI's commands that call a running meter over gRPC (`account show`, `usage`, `purchases
refused|refund|resolve`, `webhooks replay`): they import the client and nothing of the server."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta

from meter.cli import console
from meter.cli.rpc_hints import fix_for
from meter.client import MeterClient, MeterRpcError
from meter.config import Settings
from meter.grpc import tls
from meter.v1 import meter_pb2 as pb


def client(settings: Settings, target: str, token: str | None = None) -> MeterClient:
    """A client of the meter at `target` with the CLI's token (METER_TOKEN) and TLS files."""
    return MeterClient(target, token=token or settings.token, credentials=tls.channel_credentials(settings))


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "webhooks":
        return asyncio.run(_replay(settings, args.replay_target or args.target or settings.grpc_addr, args.event_id))
    target = args.target or settings.grpc_addr
    try:
        if args.command == "reconcile":
            return asyncio.run(_reconcile(settings, target, args.days))
        if args.command == "watch":
            return _watch(settings, args, target)
        print(asyncio.run(_read(settings, args, target)))
    except MeterRpcError as exc:
        print(f"meter: {exc}", file=sys.stderr)
        if fix := fix_for(exc, target, tls=tls.channel_credentials(settings) is not None):
            print(f"meter: {fix}", file=sys.stderr)
        return 1
    return 0


async def _read(settings: Settings, args: argparse.Namespace, target: str) -> str:
    async with client(settings, target) as meter:
        if args.command == "account":
            view = await console.account_view(meter, args.account_id)
            return view.as_json() if args.json else console.account_text(view)
        if args.command == "purchases":
            if args.purchases_command == "refund":
                refunded = await meter.refund_refused_purchase(account_id=args.account_id, payment_ref=args.payment_ref)
                return console.as_json([refunded.purchase]) if args.json else console.settled_text(refunded.purchase)
            if args.purchases_command == "resolve":
                resolved = await meter.resolve_refused_purchase(
                    account_id=args.account_id, payment_ref=args.payment_ref, note=args.note
                )
                return console.as_json([resolved.purchase]) if args.json else console.settled_text(resolved.purchase)
            found = await console.refused_purchases(meter, args.account_id, args.limit, unsettled_only=args.unsettled)
            return console.as_json(found) if args.json else console.refused_text(found, args.account_id)
        first, last = console.default_range(args.last)
        query = console.UsageQuery(
            args.account_id, args.first or first, args.last or last, args.by, args.labels, dict(args.where)
        )
        report = await console.usage(meter, query)
        return console.as_json(report) if args.json else console.usage_text(query, report)


def _watch(settings: Settings, args: argparse.Namespace, target: str) -> int:
    """Print each event as it commits until Ctrl-C, then say how to resume where it stopped."""
    last: list[pb.BalanceEvent] = []
    try:
        asyncio.run(_follow(settings, args, target, last))
    except KeyboardInterrupt:
        if last:
            cursor = f"--after {last[-1].sequence}" if args.account_id else f"--after-position {last[-1].position}"
            print(f"meter watch: stopped; resume with {cursor}", file=sys.stderr)
    return 0


async def _follow(settings: Settings, args: argparse.Namespace, target: str, last: list[pb.BalanceEvent]) -> None:
    async with client(settings, target) as meter:
        if not await meter.connected(within=3):
            print(
                f"meter watch: nothing answers at {target} yet; waiting (is meter running? --target HOST:PORT or "
                "METER_GRPC_ADDR names it)",
                file=sys.stderr,
                flush=True,
            )
        events = meter.watch_events(
            account_id=args.account_id or "", after_sequence=args.after, after_position=args.after_position
        )
        async for event in events:
            print(console.event_json(event) if args.json else console.event_line(event), flush=True)
            last[:] = [event]


async def _reconcile(settings: Settings, target: str, days: int) -> int:
    """List Stripe's events of the last `days` with meter's Stripe key and apply, through the
    running meter, each one it never received; 1 when some could not be applied yet."""
    from meter.stripe_api import StripeApi
    from meter.webhooks.reconcile import CONSUMED_TYPES, reconcile

    if not settings.stripe_api_key:
        print(
            "meter: reconcile reads Stripe's events: set METER_STRIPE_API_KEY (read access to Events)", file=sys.stderr
        )
        return 1
    stripe_api = StripeApi(settings.stripe_api_key, settings.stripe_api_base)
    since = datetime.now(UTC) - timedelta(days=days)
    try:
        async with client(settings, target) as meter:
            found = await reconcile(meter, stripe_api.events(CONSUMED_TYPES, since))
    finally:
        await stripe_api.close()
    print("\n".join(f"meter reconcile: {line}" for line in found.lines()))
    return 1 if found.unresolved else 0


async def _replay(settings: Settings, target: str, event_id: str) -> int:
    from meter.webhooks.app import replay

    async with client(settings, target) as meter:
        outcome = await replay(meter, event_id)
    if outcome.http_status == 404:
        print(
            f"meter: no Stripe event {event_id} is stored: replay takes the id of an event the adapter "
            "received (evt_…, as its log line and the Stripe Dashboard show it)",
            file=sys.stderr,
        )
        return 1
    print(f"meter: event {event_id}: {outcome.status} {outcome.reason}".rstrip())
    # Still rejected (or meter unreachable) is a failure the operator must see.
    return 0 if outcome.status in ("applied", "duplicate", "ignored") else 1
