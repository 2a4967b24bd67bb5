"""`meter serve | migrate | audit | account | usage | purchases | webhooks | endpoints | deliveries |
retention | health | callers | completion`: the operator's commands (and `bench` and `chaos` when the lab is
installed: see `Command`).

Only the argument definitions are imported here: each command imports what it runs when it runs,
so `meter --help` or `meter account show` does not load the server stack (the database driver,
SQLAlchemy, alembic, aiohttp, stripe) to do its small job.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Any, Protocol

from meter.cli import delivery_commands, retention_command
from meter.cli.options import json_option
from meter.config import ConfigError, Settings
from meter.domain.usage import UsageGrouping

SHELLS = ("bash", "zsh", "tcsh")
# Commands that only read: each can print the RPCs' proto3 JSON instead of a table (--json).
CLIENT_COMMANDS = ("account", "usage", "purchases", "watch", "reconcile")
SERVER_COMMANDS = ("serve", "migrate", "audit")


class Command(Protocol):
    """A command another installed package adds to `meter` (entry point group `meter.commands`):
    the lab adds `bench` and `chaos`, which are tooling, not the product."""

    def add(self, commands: Any) -> None: ...
    def run(self, settings: Settings, args: argparse.Namespace) -> int: ...


def _version() -> str:
    try:
        return version("meter")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _plugins(commands: Any, argv: list[str]) -> dict[str, Command]:
    """The installed plugins' commands. A plugin's arguments are loaded only when it is the command
    asked for (loading imports the plugin); otherwise it is listed by name."""
    plugins: dict[str, Command] = {}
    asked = next((arg for arg in argv if not arg.startswith("-")), None)
    for entry in entry_points(group="meter.commands"):
        if entry.name == asked:
            command: Command = entry.load()
            command.add(commands)
            plugins[entry.name] = command
        else:
            commands.add_parser(entry.name, help=f"(lab, installed) see `meter {entry.name} --help`")
    return plugins


def _reconcile_days(value: str) -> int:
    days = int(value)
    if not 1 <= days <= 30:
        raise argparse.ArgumentTypeError("from 1 to 30 (Stripe keeps 30 days of events)")
    return days


def _label_value(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not key or not equals:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="meter's gRPC address (default: METER_GRPC_ADDR)")


def _json(parser: argparse.ArgumentParser) -> None:
    json_option(parser, "print the RPCs' answers as JSON instead of a table")


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    parser = argparse.ArgumentParser(prog="meter", description="Token metering service for an LLM product.")
    parser.add_argument("--version", action="version", version=f"meter {_version()}")
    parser.add_argument("--json", action="store_true", help="JSON output, for the commands that have it")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="start the gRPC service (embedded Postgres without METER_DATABASE_URL)")
    commands.add_parser("migrate", help="bring the database schema up to date")
    audit_parser = commands.add_parser("audit", help="check that every balance follows from the ledger")
    audit_parser.add_argument("--account", help="audit one account only")
    webhooks = commands.add_parser("webhooks", help="run the Stripe webhook adapter alone, or replay an event")
    _target(webhooks)
    webhook_commands = webhooks.add_subparsers(dest="webhooks_command")
    replay_parser = webhook_commands.add_parser("replay", help="run a stored (e.g. rejected) event again")
    replay_parser.add_argument("event_id")
    replay_parser.add_argument("--target", dest="replay_target", help="meter's gRPC address")
    reconcile = commands.add_parser(
        "reconcile",
        help="apply what Stripe's events of the last days say and meter never received (its webhook lost)",
    )
    reconcile.add_argument(
        "--days", type=_reconcile_days, default=3, help="how far back (1-30; Stripe keeps 30 days; default 3)"
    )
    _target(reconcile)
    account = commands.add_parser("account", help="an account as a human reads it (from a running meter)")
    account_commands = account.add_subparsers(dest="account_command", required=True)
    show = account_commands.add_parser("show", help="balance, plan, period, open holds and recent entries")
    show.add_argument("account_id")
    _target(show)
    _json(show)
    usage = commands.add_parser(
        "usage", help="an account's usage by UTC day, model, provider or label (from a running meter)"
    )
    usage.add_argument("account_id")
    usage.add_argument(
        "--from", dest="first", type=date.fromisoformat, help="first UTC day, YYYY-MM-DD (default: --to - 29 days)"
    )
    usage.add_argument("--to", dest="last", type=date.fromisoformat, help="last UTC day, included (default: today)")
    usage.add_argument("--by", choices=[grouping.value for grouping in UsageGrouping], default="day")
    usage.add_argument(
        "--label",
        dest="labels",
        action="append",
        default=[],
        metavar="KEY",
        help="also split rows by this label key's values (repeatable; keys the catalog sums usage by)",
    )
    usage.add_argument(
        "--where",
        action="append",
        default=[],
        type=_label_value,
        metavar="KEY=VALUE",
        help="only calls with this label value (repeatable)",
    )
    _target(usage)
    _json(usage)
    purchases = commands.add_parser("purchases", help="purchases (from a running meter)")
    purchases_commands = purchases.add_subparsers(dest="purchases_command", required=True)
    refused = purchases_commands.add_parser(
        "refused", help="payments Stripe took that meter refused to credit, newest first, with why: to refund"
    )
    refused.add_argument("--account", dest="account_id", default="", help="only this account's")
    refused.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    refused.add_argument("--unsettled", action="store_true", help="only those nobody refunded or resolved yet")
    _target(refused)
    _json(refused)
    refund = purchases_commands.add_parser(
        "refund", help="ask Stripe to refund a refused purchase in full (once, however often asked)"
    )
    refund.add_argument("account_id", help="the account it was bought for")
    refund.add_argument("payment_ref", help="its Checkout Session id (cs_...)")
    _target(refund)
    _json(refund)
    resolve = purchases_commands.add_parser("resolve", help="mark a refused purchase settled otherwise, with a note")
    resolve.add_argument("account_id", help="the account it was bought for")
    resolve.add_argument("payment_ref", help="its Checkout Session id (cs_...)")
    resolve.add_argument("--note", required=True, help="how it was settled")
    _target(resolve)
    _json(resolve)
    watch = commands.add_parser(
        "watch", help="balance events as they happen, with the balance after each (one account, or all)"
    )
    watch.add_argument("account_id", nargs="?", default="", help="this account's (default: every account's)")
    watch.add_argument("--after", type=int, default=0, help="an account's events after this sequence (resume)")
    watch.add_argument(
        "--after-position", default="", help="every account's events after this position (resume; '' from the first)"
    )
    _target(watch)
    json_option(watch, "one JSON object per event (BalanceEvent's proto3 JSON), for a pipe")
    health = commands.add_parser("health", help="exit 0 if the meter on this machine serves (container health check)")
    health.add_argument("--url", help="its health URL (default: /healthz on METER_HTTP_ADDR)")
    callers = commands.add_parser("callers", help="caller credentials")
    callers_commands = callers.add_subparsers(dest="callers_command", required=True)
    callers_commands.add_parser("new-token", help="print a new bearer token and the token_sha256 to configure")
    completion = commands.add_parser(
        "completion", help="print a shell completion script: meter completion bash > /etc/bash_completion.d/meter"
    )
    completion.add_argument("shell", choices=SHELLS)
    delivery_commands.add(commands)
    retention_command.add(commands)
    return parser, _plugins(commands, argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, plugins = build_parser(argv)
    args = parser.parse_args(argv)
    if args.json and not getattr(args, "prints_json", False):
        parser.error(
            f"--json: `meter {args.command}` has no JSON output (`meter {args.command} --help` says what it has)"
        )
    if args.command == "completion":
        import shtab

        print(shtab.complete(parser, shell=args.shell))
        return 0
    if args.command == "callers":
        from meter.domain.callers import hash_token, new_token

        token = new_token()
        print(f"token:        {token}\ntoken_sha256: {hash_token(token)}")
        return 0
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"meter: {exc}", file=sys.stderr)
        return 2
    if args.command == "health":
        from meter import health_probe

        return health_probe.probe(args.url or health_probe.health_url(settings.http_addr))
    from meter import logs

    long_running = args.command == "serve" or (args.command == "webhooks" and args.webhooks_command is None)
    logs.configure(settings.log_level, settings.log_format if long_running else "text")
    try:
        if args.command in ("endpoints", "deliveries"):
            return delivery_commands.run(settings, args)
        if args.command == "retention":
            return retention_command.run(settings, args)
        if args.command in plugins:
            return plugins[args.command].run(settings, args)
        if args.command in CLIENT_COMMANDS or (args.command == "webhooks" and args.webhooks_command == "replay"):
            from meter.cli import client_commands

            return client_commands.run(settings, args)
        from meter.cli import server_commands

        return server_commands.run(settings, args)
    except ConfigError as exc:  # includes a catalog that does not load and an address in use
        print(f"meter: {exc}", file=sys.stderr)
        return 2
