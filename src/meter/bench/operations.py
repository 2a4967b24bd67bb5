"""`meter bench --operations`: what running meter as in production costs per call.

Two `meter serve` processes on one database: "plain" (no callers, logs at WARNING: no line per
RPC) and "operated" (callers configured, a bearer token on every call, one JSON log line per RPC
at INFO, written to a file). Both count the same Prometheus metrics (they are always on). The
same Reserve→Commit loops run against each, round after round in ABBA order, so the machine's
noise falls on both alike; the report gives medians and the ratio.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import psutil

from meter.bench import seed
from meter.bench.report import Report
from meter.bench.runner import Options, _Measurement, _progress, _Runner, _summary
from meter.domain.callers import hash_token, new_token
from meter.storage.database import Timeouts, create_engine
from meter.storage.embedded import EmbeddedPostgres
from meter.storage.migrate import upgrade_async
from meter.testbed import ServerProcess, fresh_database

CONFIGURATIONS = ("plain", "operated")


async def operations_overhead(options: Options) -> tuple[Report, int]:
    """The report (one scenario per configuration) and how many RPC log lines the operated
    server wrote (one per call, or the comparison is not what it claims)."""
    embedded = None
    server_url = os.environ.get("METER_DATABASE_URL")
    if not server_url:
        embedded = await asyncio.to_thread(EmbeddedPostgres, options.data_dir)
        server_url = embedded.url
    url = await fresh_database(server_url, "meter_bench_ops")
    await upgrade_async(url)
    engine = create_engine(url, pool_size=2, timeouts=Timeouts(600_000, 60_000, 600_000))
    token = new_token()
    options.out.mkdir(parents=True, exist_ok=True)
    log_path = options.out / "operated.log"
    log_path.unlink(missing_ok=True)
    servers = {
        "plain": ServerProcess(url),
        "operated": ServerProcess(
            url,
            {
                "METER_CALLERS": f'[[caller]]\nname = "bench"\nrole = "proxy"\ntoken_sha256 = "{hash_token(token)}"\n',
                "METER_LOG_LEVEL": "INFO",
                "METER_LOG_FORMAT": "json",
            },
            log_path=log_path,
        ),
    }
    tokens = {"plain": "", "operated": token}
    postgres = psutil.Process(embedded.pid) if embedded and embedded.pid else None
    pool = ProcessPoolExecutor(max_workers=options.processes, mp_context=get_context("spawn"))
    report = Report(settings={k: str(v) for k, v in options.__dict__.items()} | {"mode": "operations"})
    try:
        many = await seed.funded_accounts(engine, "bench-many-", options.accounts, buckets=16)
        hot = await seed.funded_accounts(engine, "bench-hot-", 1, buckets=16)
        for server in servers.values():
            await server.ready()
        runners = {name: _Runner(options, pool, server, postgres) for name, server in servers.items()}
        rounds: dict[str, list[_Measurement]] = {}
        for number in range(1, options.rounds + 1):
            order = CONFIGURATIONS if number % 2 else CONFIGURATIONS[::-1]
            for scenario, accounts in (("many accounts", many), ("hot account", hot)):
                for name in order:
                    measurement = await runners[name].measure(
                        "loop", accounts, options.seconds / options.rounds, token=tokens[name]
                    )
                    rounds.setdefault(f"{scenario}, {name}", []).append(measurement)
                    _progress(f"round {number}: {scenario}, {name}", measurement)
        for label, measurements in rounds.items():
            report.scenarios[label] = _summary(label, measurements)
    finally:
        pool.shutdown()
        for server in servers.values():
            server.stop()
        await engine.dispose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    with log_path.open() as log:
        lines = sum(1 for line in log if '"logger": "meter.rpc"' in line)
    return report, lines


def ratios(report: Report) -> str:
    """operated / plain, per scenario, for throughput and meter's CPU per loop."""
    out = []
    for scenario in ("many accounts", "hot account"):
        plain, operated = (report.scenarios[f"{scenario}, {name}"] for name in CONFIGURATIONS)
        out.append(
            f"{scenario}: loops/s operated/plain = {operated.loops_per_second / plain.loops_per_second:.3f}, "
            f"meter CPU per loop operated/plain = "
            f"{operated.meter_cpu_seconds_per_1000_loops / plain.meter_cpu_seconds_per_1000_loops:.3f}"
        )
    return "\n".join(out)
