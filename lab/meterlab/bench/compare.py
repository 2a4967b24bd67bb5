"""Several `meter serve` configurations on one database, measured side by side.

The same Reserve→Commit loops (many accounts, then one hot account) run against each server,
round after round, the order of the servers reversed every other round, so this noisy machine's
swings fall on all of them alike; the report gives each scenario's median round. Used by
`meter bench --operations` (what production settings cost) and `meter bench --reserve-wait`
(what waiting for a locked row changes).
"""

from __future__ import annotations

import asyncio
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from meterlab.bench import seed
from meterlab.bench.report import Report
from meterlab.bench.runner import Options, _Measurement, _progress, _Runner, _summary
from meterlab.testbed import LabDatabase, ServerProcess

SCENARIOS = ("many accounts", "hot account")


@dataclass(frozen=True)
class Configuration:
    env: dict[str, str] = field(default_factory=dict)  # on top of the bench server's environment
    token: str = ""  # the bearer token the load presents
    log_path: Path | None = None  # the server's log, else discarded


@dataclass
class Comparison:
    report: Report  # scenarios named "<scenario>, <configuration>"; medians over the rounds
    # Per scenario, each round's share of Reserves taken from all the account's rows at once.
    across_rows: dict[str, list[float]] = field(default_factory=dict)


async def compare(options: Options, prefix: str, configurations: dict[str, Configuration], mode: str) -> Comparison:
    database = await LabDatabase.create(prefix, options.data_dir)
    servers = {
        name: ServerProcess(database.url, config.env, log_path=config.log_path)
        for name, config in configurations.items()
    }
    pool = ProcessPoolExecutor(max_workers=options.processes, mp_context=get_context("spawn"))
    comparison = Comparison(Report(settings={k: str(v) for k, v in options.__dict__.items()} | {"mode": mode}))
    try:
        accounts = {
            "many accounts": await seed.funded_accounts(database.engine, "bench-many-", options.accounts, buckets=16),
            "hot account": await seed.funded_accounts(database.engine, "bench-hot-", 1, buckets=16),
        }
        for server in servers.values():
            await server.ready()
        runners = {name: _Runner(options, pool, server, database.postgres_process) for name, server in servers.items()}
        names = list(configurations)
        rounds: dict[str, list[_Measurement]] = {}
        for number in range(1, options.rounds + 1):
            order = names if number % 2 else names[::-1]
            for scenario in SCENARIOS:
                for name in order:
                    label = f"{scenario}, {name}"
                    before = await _reserves_across_rows(servers[name])
                    measurement = await runners[name].measure(
                        "loop", accounts[scenario], options.seconds / options.rounds, token=configurations[name].token
                    )
                    share = (await _reserves_across_rows(servers[name]) - before) / max(measurement.samples.loops, 1)
                    rounds.setdefault(label, []).append(measurement)
                    comparison.across_rows.setdefault(label, []).append(share)
                    _progress(f"round {number}: {label} ({share:.1%} of Reserves taken from all rows)", measurement)
        for label, measurements in rounds.items():
            comparison.report.scenarios[label] = _summary(label, measurements)
    finally:
        pool.shutdown()
        for server in servers.values():
            server.stop()
        await database.close()
    return comparison


async def _reserves_across_rows(server: ServerProcess) -> float:
    """The server's meter_reserves_across_rows_total, from its /metrics."""

    def scrape() -> str:
        with urllib.request.urlopen(f"http://{server.http_address}/metrics", timeout=10) as response:
            return str(response.read().decode())

    for family in text_string_to_metric_families(await asyncio.to_thread(scrape)):
        for sample in family.samples:
            if sample.name == "meter_reserves_across_rows_total":
                return float(sample.value)
    return 0.0
