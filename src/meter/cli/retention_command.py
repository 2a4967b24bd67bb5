"""`meter retention`: what the retention of stored Stripe payloads (METER_WEBHOOK_PAYLOAD_RETENTION_DAYS)
keeps, has due and pruned, in payloads and bytes, in total and by its latest passes; `meter
retention prune` runs a pass now, every batch of it (the sweepers of the running replicas do the
same, a few batches a sweep). It works on the database directly (METER_DATABASE_URL, or the
embedded one), like `meter audit`: an operator's tool, not a caller's RPC."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from meter.cli.direct import run_with_meter
from meter.cli.options import json_option
from meter.config import Settings

if TYPE_CHECKING:  # the server stack is imported when the command runs, not to parse arguments
    from meter.service.context import Meter
    from meter.service.ports import PayloadRetention, Payloads


def add(commands: Any) -> None:
    retention = commands.add_parser(
        "retention", help="stored Stripe payloads: how many the retention window pruned, and how many are due"
    )
    retention_commands = retention.add_subparsers(dest="retention_command")
    prune = retention_commands.add_parser("prune", help="prune every payload due now, then report")
    for parser, default in ((retention, 5), (prune, argparse.SUPPRESS)):
        # On both, so that `meter retention --json prune` and `meter retention prune --json` work;
        # SUPPRESS keeps the subcommand's defaults from overwriting what was given before it.
        json_option(parser, "one JSON object")
        parser.add_argument(
            "--passes", type=int, default=default, help="list this many of the latest pruning passes (default 5)"
        )


def run(settings: Settings, args: argparse.Namespace) -> int:
    return run_with_meter(settings, lambda meter: _run(meter, args))


async def _run(meter: Meter, args: argparse.Namespace) -> int:
    from meter.service import retention

    days = meter.parameters.webhook_payload_retention_days
    pruned_now: Payloads | None = None
    if getattr(args, "retention_command", None) == "prune":
        pruned_now = await retention.prune(meter, batches=None)
    cutoff, state = await retention.report(meter, passes=max(args.passes, 0))
    if args.json:
        print(json.dumps(_json(days, cutoff, state, pruned_now)))
        return 0
    if pruned_now is not None:
        if days:
            print(f"meter: pruned {_amount(pruned_now)} now")
        else:
            print("meter: nothing pruned: payloads are kept forever (METER_WEBHOOK_PAYLOAD_RETENTION_DAYS=0)")
    window = f"{days} days after their event last changed" if days else "forever"
    print(f"retention: payloads kept {window} (METER_WEBHOOK_PAYLOAD_RETENTION_DAYS={days})")
    print(f"stored:    {_amount(state.kept)}")
    since = f": events unchanged since before {_when(cutoff)}" if cutoff else ""
    print(f"due:       {_amount(state.due)}{since}")
    print(f"pruned:    {_amount(state.pruned)} in total")
    if state.passes:
        print("latest passes:")
        for pruned_at, payloads in state.passes:
            print(f"  {_when(pruned_at)}  {_amount(payloads)}")
    return 0


def _amount(payloads: Payloads) -> str:
    return f"{payloads.count} payloads, {_size(payloads.size)}"


def _size(size: int) -> str:
    """Exact bytes, and in decimal units for a reader (1 kB = 1000 bytes)."""
    if size < 1000:
        return f"{size} bytes"
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= factor:
            return f"{size} bytes ({size / factor:.1f} {unit})"
    raise AssertionError("unreachable")


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def _json(days: int, cutoff: datetime | None, state: PayloadRetention, pruned_now: Payloads | None) -> dict[str, Any]:
    def amount(payloads: Payloads) -> dict[str, int]:
        return {"payloads": payloads.count, "bytes": payloads.size}

    report: dict[str, Any] = {
        "retention_days": days,
        "due_before": cutoff.isoformat() if cutoff else None,
        "stored": amount(state.kept),
        "due": amount(state.due),
        "pruned": amount(state.pruned),
        "passes": [{"pruned_at": at.isoformat()} | amount(payloads) for at, payloads in state.passes],
    }
    if pruned_now is not None:
        report["pruned_now"] = amount(pruned_now)
    return report
