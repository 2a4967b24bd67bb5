"""`meter bench` and `meter chaos`: the lab's commands, added to meter's CLI through the entry
point group `meter.commands` (see `meter.cli.Command`). Only argument definitions are imported
with the CLI; what a command runs is imported when it runs."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from meter.config import Settings
from meterlab.bench.runner import Options


class Bench:
    """`meter bench`: meter against its ceiling and the one-row design, side by side."""

    def add(self, commands: Any) -> None:
        parser = commands.add_parser("bench", help="measure meter against its ceiling and the one-row design")
        defaults = Options()
        parser.add_argument("--seconds", type=float, default=defaults.seconds, help="length of each scenario")
        parser.add_argument("--rounds", type=int, default=defaults.rounds, help="interleaved rounds (median reported)")
        parser.add_argument("--concurrency", type=int, default=defaults.concurrency, help="concurrent callers")
        parser.add_argument("--processes", type=int, default=defaults.processes, help="load-generator processes")
        parser.add_argument("--accounts", type=int, default=defaults.accounts, help="funded accounts (many accounts)")
        parser.add_argument("--history-accounts", type=int, default=defaults.history_accounts)
        parser.add_argument("--history-entries", type=int, default=defaults.history_entries)
        parser.add_argument("--out", type=Path, default=defaults.out, help="folder for bench.json and bench.png")
        parser.add_argument(
            "--leak-check",
            action="store_true",
            help="instead of the scenarios: server RSS after 10%% and 100%% of RPCs",
        )
        parser.add_argument(
            "--history-reads",
            action="store_true",
            help="instead of the scenarios: GetUsage and ListLedgerEntries, 1 000 vs 1 000 000 calls",
        )
        parser.add_argument(
            "--operations",
            action="store_true",
            help="instead of the scenarios: plain meter vs callers + token + JSON log line per RPC, ABBA",
        )
        parser.add_argument(
            "--reserve-wait",
            action="store_true",
            help="instead of the scenarios: METER_RESERVE_WAIT_MS=0 vs the default, hot and many accounts, ABBA",
        )
        parser.add_argument(
            "--coalesce",
            action="store_true",
            help="instead of the scenarios: a statement per call vs coalesced statements (METER_COALESCE), ABBA",
        )
        parser.add_argument(
            "--labels",
            action="store_true",
            help="instead of the scenarios: plain vs labelled calls (every token class) vs labelled under budgets",
        )
        parser.add_argument(
            "--grants",
            action="store_true",
            help="instead of the scenarios: many accounts vs many accounts with five live grants each",
        )
        parser.add_argument(
            "--watchers",
            action="store_true",
            help="instead of the scenarios: Reserve and Commit with 50 every-account watchers replaying history, "
            "their reads bounded (METER_WATCH_READS) or not",
        )
        parser.add_argument(
            "--against",
            metavar="REV",
            help="instead of the scenarios: this checkout vs git revision REV, side by side, ABBA",
        )
        parser.add_argument(
            "--reads-calls", type=int, default=1_000_000, help="calls of the big account (history reads)"
        )
        parser.add_argument("--leak-rpcs", type=int, default=defaults.leak_rpcs, help="RPCs of the leak check")

    def run(self, settings: Settings, args: argparse.Namespace) -> int:
        return asyncio.run(_bench(settings, args))


class Chaos:
    """`meter chaos`: faults and invariants."""

    def add(self, commands: Any) -> None:
        parser = commands.add_parser("chaos", help="faults and invariants: prove nothing is lost or counted twice")
        parser.add_argument("--minutes", type=float, default=2.0, help="length of the whole run")
        parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
        parser.add_argument("--seed", type=int, default=1, help="seed of the random workload")
        parser.add_argument("--out", type=Path, default=Path("chaos-results"), help="folder for chaos.json")
        parser.add_argument(
            "--no-hostile-endpoints",
            dest="hostile_endpoints",
            action="store_false",
            help="send webhooks to the healthy endpoint alone (no tarpit, no redirects): the delays to compare with",
        )
        parser.add_argument(
            "--shipped-client",
            action="store_true",
            help="instead: proxies on meter.client through SIGKILL, a database fault and 10 s of meter down",
        )

    def run(self, settings: Settings, args: argparse.Namespace) -> int:
        return asyncio.run(_shipped_client(settings, args) if args.shipped_client else _chaos(settings, args))


class TryStripe:
    """`meter try-stripe`: a purchase or a refund as Stripe delivers it, without a Stripe account."""

    def add(self, commands: Any) -> None:
        parser = commands.add_parser(
            "try-stripe", help="send meter a pack purchase or refund as Stripe would (no Stripe account needed)"
        )
        steps = parser.add_subparsers(dest="try_stripe_command", required=True)
        bought = steps.add_parser("purchase", help="a paid checkout.session.completed for a pack")
        bought.add_argument("account_id")
        bought.add_argument(
            "--pack", default="pack_1000_tokens", help="a pack of the catalog (default pack_1000_tokens)"
        )
        refunded = steps.add_parser("refund", help="a charge.refunded of a purchase made with `purchase`")
        refunded.add_argument("account_id", help="the account it was bought for (to show its balance)")
        refunded.add_argument("payment_intent", help="the PaymentIntent `purchase` printed (pi_try_…)")
        refunded.add_argument("--pack", default="pack_1000_tokens", help="the pack bought (its price is the charge)")
        refunded.add_argument("--refunded", type=int, help="minor units refunded so far (default: all of it)")
        for step in (bought, refunded):
            step.add_argument("--url", help="meter's Stripe webhook endpoint (default: on METER_HTTP_ADDR)")
            step.add_argument("--target", help="meter's gRPC address, to show the balance (default: METER_GRPC_ADDR)")

    def run(self, settings: Settings, args: argparse.Namespace) -> int:
        return asyncio.run(_try_stripe(settings, args))


async def _try_stripe(settings: Settings, args: argparse.Namespace) -> int:
    import aiohttp

    from meter.bootstrap import load_catalog
    from meter.webhooks.app import PATH
    from meterlab import try_stripe

    if not settings.stripe_webhook_secrets:
        print(
            "meter try-stripe: METER_STRIPE_WEBHOOK_SECRET is not set: start meter with a secret "
            "(METER_STRIPE_WEBHOOK_SECRET=whsec_try make run) and set the same one here",
            flush=True,
        )
        return 2
    pack = load_catalog(settings).pack(args.pack)
    url = args.url or f"http://{settings.http_addr}{PATH}"
    if args.try_stripe_command == "purchase":
        payload, intent = try_stripe.purchase(args.account_id, pack)
    else:
        refunded = pack.price_minor if args.refunded is None else args.refunded
        payload, intent = try_stripe.refund(args.payment_intent, pack.price_minor, refunded, pack.currency), ""
    try:
        delivered = await try_stripe.deliver(url, payload, settings.stripe_webhook_secrets[0])
    except aiohttp.ClientError as error:
        print(
            f"meter try-stripe: nothing answers at {url} ({error}): is meter running? METER_HTTP_ADDR (or --url) "
            "names its webhook endpoint",
            flush=True,
        )
        return 1
    outcome = " ".join(str(delivered.answer.get(key, "")) for key in ("status", "reason")).strip()
    print(f"{delivered.event_type} {delivered.event_id} -> {url}: {delivered.status} {outcome}", flush=True)
    if delivered.answer.get("status") not in ("applied", "duplicate", "ignored"):
        return 1
    if intent:
        print(f"paid by {intent}; refund it: meter try-stripe refund {args.account_id} {intent} --pack {pack.id}")
    print(await try_stripe.balance_line(args.target or settings.grpc_addr, settings.token, args.account_id), flush=True)
    return 0


bench = Bench()
chaos = Chaos()
try_stripe = TryStripe()


async def _bench(settings: Settings, args: argparse.Namespace) -> int:
    if args.history_reads:
        from meterlab.bench.reads import history_reads

        data_dir = settings.data_dir.parent / (settings.data_dir.name + "-bench")
        reads = await history_reads(data_dir, big=args.reads_calls)
        print(reads.table())
        print(f"meter bench: wrote {reads.write(args.out)}")
        return 0
    # The side-by-side modes: a few thousand accounts are enough to keep rows from colliding.
    side_by_side = Options(
        seconds=args.seconds,
        rounds=args.rounds,
        concurrency=args.concurrency,
        processes=args.processes,
        accounts=min(args.accounts, 2000),
        out=args.out,
        data_dir=settings.data_dir.parent / (settings.data_dir.name + "-bench"),
    )
    if args.operations:
        from meterlab.bench import operations

        ops, log_lines = await operations.operations_overhead(side_by_side)
        print(ops.table(targets=False))
        print(operations.ratios(ops))
        print(f"meter bench: {log_lines} RPC log lines written by the operated server")
        return 0
    if args.against:
        from meterlab.bench import against

        comparison = await against.against(side_by_side, args.against)
        print(comparison.report.table(targets=False))
        print(against.ratios(comparison, args.against))
        return 0
    if args.coalesce:
        from meterlab.bench import coalesce

        comparison = await coalesce.coalesce(side_by_side)
        print(comparison.report.table(targets=False))
        print(coalesce.ratios(comparison))
        return 0
    if args.labels:
        from meterlab.bench import labels

        labelled = await labels.labels(side_by_side)
        print(labelled.table(targets=False))
        print(labels.ratios(labelled))
        return 0
    if args.grants:
        from meterlab.bench import grants

        granted = await grants.grants(side_by_side)
        print(granted.table(targets=False))
        print(grants.ratios(granted))
        return 0
    if args.watchers:
        from meterlab.bench import watchers

        watched = await watchers.watchers(side_by_side)
        print(watched.table(targets=False))
        print(watchers.ratios(watched))
        return 0
    if args.reserve_wait:
        from meterlab.bench import reserve_wait

        comparison = await reserve_wait.reserve_wait(side_by_side)
        print(comparison.report.table(targets=False))
        print(reserve_wait.ratios(comparison))
        return 0
    options = Options(
        seconds=args.seconds,
        rounds=args.rounds,
        concurrency=args.concurrency,
        processes=args.processes,
        accounts=args.accounts,
        history_accounts=args.history_accounts,
        history_entries=args.history_entries,
        out=args.out,
        leak_check=args.leak_check,
        leak_rpcs=args.leak_rpcs,
        data_dir=settings.data_dir.parent / (settings.data_dir.name + "-bench"),
    )
    from meterlab.bench.runner import bench

    report = await bench(options)
    json_path, chart = report.write(options.out)
    print(report.table())
    print(f"meter bench: wrote {json_path}" + (f" and {chart}" if chart else ""))
    return 0


async def _shipped_client(settings: Settings, args: argparse.Namespace) -> int:
    from meterlab.chaos.shipped_client import Options, client_outages

    options = Options(seed=args.seed, database_url=settings.database_url)
    print("meter chaos --shipped-client: SIGKILL, a database fault, meter down 10 s", flush=True)
    report = await client_outages(options)
    print(report.render())
    return 0 if not report.violations else 1


async def _chaos(settings: Settings, args: argparse.Namespace) -> int:
    from meterlab.chaos.report import HEADER
    from meterlab.chaos.runner import SCENARIOS, chaos
    from meterlab.chaos.runner import Options as ChaosOptions

    seconds = max(5.0, args.minutes * 60 / len(SCENARIOS))
    options = ChaosOptions(
        seconds=seconds,
        clients=args.clients,
        seed=args.seed,
        database_url=settings.database_url,
        hostile_endpoints=args.hostile_endpoints,
    )
    print(f"meter chaos: {len(SCENARIOS)} scenarios of {seconds:.0f} s, {args.clients} clients", flush=True)
    print(HEADER, flush=True)
    report = await chaos(options, progress=lambda line: print(line, flush=True))
    print(report.render())
    print(f"meter chaos: report in {report.save(args.out)}")
    return 0 if report.clean else 1
