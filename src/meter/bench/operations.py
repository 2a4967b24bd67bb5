"""`meter bench --operations`: what running meter as in production costs per call.

Three `meter serve` processes on one database: "plain" (no callers, logs at WARNING: no line per
RPC), "callers" (callers configured and a bearer token on every call, JSON logs at INFO with
METER_RPC_LOG=failures: no line for a call that succeeded) and "operated" (the same with one JSON
line per RPC, the default), the last two logging to files. All count the same Prometheus metrics
(they are always on). The same Reserve→Commit loops run against each, round after round, the
order reversed every other round, so the machine's noise falls on all alike; the report gives
medians and ratios to plain.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from meter.bench import seed
from meter.bench.report import Report
from meter.bench.runner import BenchDatabase, Options, _Measurement, _progress, _Runner, _summary
from meter.domain.callers import hash_token, new_token
from meter.testbed import ServerProcess

CONFIGURATIONS = ("plain", "callers", "operated")


async def operations_overhead(options: Options) -> tuple[Report, int]:
    """The report (one scenario per configuration) and how many RPC log lines the operated
    server wrote (one per call, or the comparison is not what it claims)."""
    database = await BenchDatabase.create(options, "meter_bench_ops")
    engine, url = database.engine, database.url
    token = new_token()
    options.out.mkdir(parents=True, exist_ok=True)
    log_path = options.out / "operated.log"
    log_path.unlink(missing_ok=True)
    operated = {
        "METER_CALLERS": f'[[caller]]\nname = "bench"\nrole = "proxy"\ntoken_sha256 = "{hash_token(token)}"\n',
        "METER_LOG_LEVEL": "INFO",
        "METER_LOG_FORMAT": "json",
    }
    servers = {
        "plain": ServerProcess(url),
        "callers": ServerProcess(url, operated | {"METER_RPC_LOG": "failures"}, log_path=options.out / "callers.log"),
        "operated": ServerProcess(url, operated, log_path=log_path),
    }
    tokens = {"plain": "", "callers": token, "operated": token}
    postgres = database.postgres
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
        await database.close()
    with log_path.open() as log:
        lines = sum(1 for line in log if '"logger": "meter.rpc"' in line)
    return report, lines


def ratios(report: Report) -> str:
    """Each configuration / plain, per scenario, for throughput and meter's CPU per loop."""
    out = []
    for scenario in ("many accounts", "hot account"):
        plain = report.scenarios[f"{scenario}, plain"]
        for name in CONFIGURATIONS[1:]:
            other = report.scenarios[f"{scenario}, {name}"]
            throughput = other.loops_per_second / plain.loops_per_second
            cpu = other.meter_cpu_seconds_per_1000_loops / plain.meter_cpu_seconds_per_1000_loops
            out.append(f"{scenario}: {name}/plain loops/s {throughput:.3f}, meter CPU per loop {cpu:.3f}")
    return "\n".join(out)
