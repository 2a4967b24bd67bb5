"""Several `meter serve` configurations on one database, measured side by side.

The same Reserve→Commit loops (many accounts, then one hot account) run against each server,
round after round, the order of the servers reversed every other round, so this noisy machine's
swings fall on all of them alike; the report gives each scenario's median round. Used by
`meter bench --operations` (what production settings cost), `meter bench --reserve-wait` (what
waiting for a locked row changes) and `meter bench --against` (this checkout against another
revision: each server then runs its own code on a database its own migrations made).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from meterlab.bench import seed, server_metrics
from meterlab.bench.report import Report
from meterlab.bench.runner import Options, _Measurement, _progress, _Runner, _summary
from meterlab.testbed import LabDatabase, ServerProcess

SCENARIOS = {"many accounts": seed.MANY, "hot account": seed.HOT}


@dataclass(frozen=True)
class Configuration:
    env: dict[str, str] = field(default_factory=dict)  # on top of the bench server's environment
    token: str = ""  # the bearer token the load presents
    log_path: Path | None = None  # the server's log, else discarded
    # Another checkout's code (its src/ first on PYTHONPATH) serving on a database of its own,
    # migrated by that code; else this checkout's, on the database the configurations share.
    source: Path | None = None


@dataclass
class Comparison:
    report: Report  # scenarios named "<scenario>, <configuration>"; medians over the rounds
    # Per scenario, each round's share of Reserves taken from all the account's rows at once.
    across_rows: dict[str, list[float]] = field(default_factory=dict)
    # Per scenario, each round's calls per Reserve (and Commit) statement sent: 1.0 without coalescing.
    calls_per_statement: dict[str, list[float]] = field(default_factory=dict)


async def compare(
    options: Options,
    prefix: str,
    configurations: dict[str, Configuration],
    mode: str,
    scenarios: dict[str, seed.Accounts] = SCENARIOS,
) -> Comparison:
    shared = await LabDatabase.create(prefix, options.data_dir)
    databases = {name: shared for name in configurations}
    for name, config in configurations.items():
        if config.source is not None:
            databases[name] = await LabDatabase.create(prefix, options.data_dir, shared.url, _code(config))
    servers = {
        name: ServerProcess(databases[name].url, config.env | _code(config), log_path=config.log_path)
        for name, config in configurations.items()
    }
    pool = ProcessPoolExecutor(max_workers=options.processes, mp_context=get_context("spawn"))
    comparison = Comparison(Report(settings={k: str(v) for k, v in options.__dict__.items()} | {"mode": mode}))
    try:
        funded: dict[tuple[str, int], list[str]] = {}  # (scenario, id of the database)
        for database in {id(d): d for d in databases.values()}.values():
            for scenario, spec in scenarios.items():
                funded[(scenario, id(database))] = await spec.fund(database.engine, options.accounts)
            # Analysed before the first call: a server's connections keep the plans they make then, and a
            # database still waiting for autovacuum's first pass was seen 10-15 % slower for a whole run.
            await seed.settle_in(database.engine)
        for server in servers.values():
            await server.ready()
        postgres = shared.postgres_process  # one server holds every configuration's database
        runners = {name: _Runner(options, pool, server, postgres) for name, server in servers.items()}
        names = list(configurations)
        rounds: dict[str, list[_Measurement]] = {}
        for number in range(1, options.rounds + 1):
            order = names if number % 2 else names[::-1]
            for scenario in scenarios:
                for name in order:
                    label = f"{scenario}, {name}"
                    before = await server_metrics.scrape(servers[name])
                    measurement = await runners[name].measure(
                        "loop",
                        funded[(scenario, id(databases[name]))],
                        options.seconds / options.rounds,
                        token=configurations[name].token,
                    )
                    after = await server_metrics.scrape(servers[name])
                    share = (after.across_rows - before.across_rows) / max(measurement.samples.loops, 1)
                    batch = after.calls_per_statement_since(before)
                    rounds.setdefault(label, []).append(measurement)
                    comparison.across_rows.setdefault(label, []).append(share)
                    comparison.calls_per_statement.setdefault(label, []).append(batch)
                    _progress(
                        f"round {number}: {label} ({share:.1%} of Reserves taken from all rows, "
                        f"{batch:.2f} calls per statement)",
                        measurement,
                    )
        for label, measurements in rounds.items():
            comparison.report.scenarios[label] = _summary(label, measurements)
    finally:
        pool.shutdown()
        for server in servers.values():
            server.stop()
        for database in databases.values():
            if database is not shared:
                await database.close()
        await shared.close()  # last: it may own the embedded server the others live on
    return comparison


def _code(config: Configuration) -> dict[str, str]:
    """The environment that makes `meter` import the configuration's checkout, if it names one."""
    return {} if config.source is None else {"PYTHONPATH": str(config.source / "src")}
