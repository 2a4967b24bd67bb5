"""Runs the benchmark: database, server, data, load processes, figures.

The server is a real `meter serve` subprocess; the load comes from separate processes over real
gRPC channels; the hot single-bucket scenario uses an account created with one bucket per pool,
which is what METER_BUCKETS=1 creates (the old one-row-per-account design).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from statistics import median

import psutil

from meter.config import Settings
from meterlab.bench import database_alone, floor, seed, server_metrics
from meterlab.bench.load import Job, Samples, run
from meterlab.bench.report import Report, ScenarioResult, merge, percentiles
from meterlab.testbed import LabDatabase, ServerProcess


@dataclass(frozen=True)
class Options:
    seconds: float = 20.0  # per scenario, split over the rounds
    rounds: int = 3  # the closed-loop scenarios run interleaved, round after round
    concurrency: int = 64
    processes: int = 2
    accounts: int = 10_000
    mixed_accounts: int = 1_000
    history_accounts: int = 1_000_000
    history_entries: int = 10_000_000
    out: Path = Path("bench-results")
    data_dir: Path = Path(".meter-bench")
    leak_check: bool = False  # instead of the scenarios: server RSS after 100 000 and 1 000 000 RPCs
    leak_rpcs: int = 1_000_000


class _Meter:
    """CPU seconds of a process tree and the peak RSS of one process, sampled in a thread."""

    def __init__(self, server: psutil.Process, postgres: psutil.Process | None) -> None:
        self.server, self.postgres = server, postgres
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _cpu(self, process: psutil.Process | None) -> float:
        """CPU of a process and its children, including children that have exited (a
        Postgres backend that closes takes its CPU into its parent's children_* times)."""
        if process is None:
            return 0.0
        times = process.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in process.children(recursive=True):
            try:
                times = child.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_rss = max(self.peak_rss, self.server.memory_info().rss)

    def __enter__(self) -> _Meter:
        self.cpu_before = (self._cpu(self.server), self._cpu(self.postgres))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, self.server.memory_info().rss)
        self.cpu = (self._cpu(self.server) - self.cpu_before[0], self._cpu(self.postgres) - self.cpu_before[1])


async def bench(options: Options) -> Report:
    database = await LabDatabase.create("meter_bench", options.data_dir)
    engine, url = database.engine, database.url
    report = Report(settings={k: str(v) for k, v in options.__dict__.items()})
    postgres = database.postgres_process
    server = ServerProcess(url)
    floor_server: ServerProcess | None = None
    pool = ProcessPoolExecutor(max_workers=options.processes, mp_context=get_context("spawn"))
    try:
        many = await seed.MANY.fund(engine, options.accounts)
        if options.leak_check:
            await server.ready()
            report.memory = await _leak_check(_Runner(options, pool, server, postgres), many)
            return report
        hot = await seed.HOT.fund(engine, options.accounts)
        hot1 = await seed.SINGLE_BUCKET.fund(engine, options.accounts)
        many_limited = await seed.MANY_LIMITED.fund(engine, options.accounts)
        hot_limited = await seed.HOT_LIMITED.fund(engine, options.accounts)
        budgeted = await seed.MANY_BUDGETED.fund(engine, options.accounts)
        mixed = await seed.funded_accounts(engine, "bench-mixed-", options.mixed_accounts, buckets=16)
        await floor.fund(engine, many, seed.FUNDING_TOKENS)
        await seed.settle_in(engine)  # analysed before the first call plans the hot path
        floor_server = ServerProcess(url, module="meterlab.bench.floor")
        await server.ready()
        await floor_server.ready()
        runner = _Runner(options, pool, server, postgres)
        # Interleaved rounds: noise on this shared machine falls on every scenario alike, and
        # each scenario reports its median round.
        plan: list[tuple[str, str, list[str], ServerProcess]] = [
            ("ceiling", "ceiling", [], server),
            ("floor", "loop", many, floor_server),
            ("many accounts", "loop", many, server),
            ("many accounts, labelled", "labelled", many, server),
            ("many accounts, labelled, budgets", "labelled", budgeted, server),
            ("hot account", "loop", hot, server),
            ("hot account, single bucket", "loop", hot1, server),
            ("mixed", "mixed", mixed, server),
            ("many accounts, limits on", "loop", many_limited, server),
            ("hot account, limits on", "loop", hot_limited, server),
        ]
        rounds: dict[str, list[_Measurement]] = {name: [] for name, _, _, _ in plan}
        batches: list[float] = []  # calls per statement in each many-accounts round
        for number in range(1, options.rounds + 1):
            for name, kind, accounts, target in plan:
                counted = name == "many accounts"
                before = await server_metrics.scrape(server) if counted else None
                measurement = await runner.measure(kind, accounts, options.seconds / options.rounds, server=target)
                if before is not None:
                    batches.append((await server_metrics.scrape(server)).calls_per_statement_since(before))
                rounds[name].append(measurement)
                _progress(f"round {number}: {name}", measurement)
        report.calls_per_statement = round(median(batches), 2)
        floor_server.stop()
        for name, _, _, _ in plan:
            report.scenarios[name] = _summary(name, rounds[name])
        report.database_alone = await _database_alone(
            options,
            database,
            {
                "many accounts": database_alone.Accounts(seed.MANY.prefix, len(many)),
                "hot account": database_alone.Accounts(seed.HOT.prefix, len(hot)),
                "hot account, single bucket": database_alone.Accounts(seed.SINGLE_BUCKET.prefix, len(hot1)),
            },
        )
        half = report.scenarios["many accounts"].loops_per_second / 2
        for name, kind, accounts in (("half load", "loop", many), ("ceiling at half load", "ceiling", [])):
            report.scenarios[name] = _summary(
                name, [await runner.measure(kind, accounts, options.seconds, rate=half)], half
            )
        print(
            f"meter bench: loading {options.history_accounts} accounts and {options.history_entries} entries",
            flush=True,
        )
        await seed.history(engine, "bench-history-", options.history_accounts, options.history_entries // 2 * 2)
        history = [await runner.measure("loop", many, options.seconds / options.rounds) for _ in range(options.rounds)]
        report.scenarios["large history"] = _summary("large history", history)
    finally:
        pool.shutdown()
        server.stop()
        if floor_server is not None:
            floor_server.stop()
        await database.close()
    return report


@dataclass
class _Measurement:
    samples: Samples
    meter_cpu: float
    postgres_cpu: float
    peak_rss: int


class _Runner:
    def __init__(
        self, options: Options, pool: ProcessPoolExecutor, server: ServerProcess, postgres: psutil.Process | None
    ) -> None:
        self.options, self.pool, self.server, self.postgres = options, pool, server, postgres

    async def measure(
        self,
        kind: str,
        accounts: list[str],
        seconds: float,
        rate: float = 0.0,
        loops: int = 0,
        token: str = "",
        server: ServerProcess | None = None,
    ) -> _Measurement:
        """`server`: the one to load and measure, when not meter's (the floor)."""
        options = self.options
        server = server or self.server
        callers = max(1, options.concurrency // options.processes)
        share = -(-loops // options.processes)
        jobs = [
            Job(kind, server.address, accounts, callers, seconds, rate / options.processes, i, share, token)
            for i in range(options.processes)
        ]
        loop = asyncio.get_running_loop()
        with _Meter(server.stats, self.postgres) as usage:
            parts = await asyncio.gather(*(loop.run_in_executor(self.pool, run, job) for job in jobs))
        return _Measurement(merge(list(parts)), usage.cpu[0], usage.cpu[1], usage.peak_rss)


async def _database_alone(
    options: Options, database: LabDatabase, accounts: dict[str, database_alone.Accounts]
) -> dict[str, float]:
    """The scenarios' accounts driven by pgbench alone, interleaved round after round, order
    reversed every other round; medians. Empty (and said) when pgbench is not installed."""
    binary = database_alone.pgbench()
    if binary is None:
        print("meter bench: pgbench not found: no database-alone figures", flush=True)
        return {}
    rates: dict[str, list[float]] = {name: [] for name in accounts}
    clients = Settings().db_pool_size  # as many connections as a replica's pool
    for number in range(1, options.rounds + 1):
        order = list(accounts) if number % 2 else list(accounts)[::-1]
        for name in order:
            rate = await database_alone.loops_per_second(
                binary, database.url, database.engine, accounts[name], options.seconds / options.rounds, clients
            )
            rates[name].append(rate)
            print(f"meter bench: round {number}: {name}, database alone: {rate:.0f} loops/s", flush=True)
    return {name: round(median(values), 1) for name, values in rates.items()}


async def _leak_check(runner: _Runner, accounts: list[str]) -> dict[str, float]:
    """Reserve→Commit loops (two RPCs each) until a tenth of `leak_rpcs`, then until all of them:
    the server's RSS at both points. Anything kept per request would grow nine times over."""
    total = runner.options.leak_rpcs
    done = 0
    memory: dict[str, float] = {}
    for label, upto in (("rss_mb_after_first_tenth", total // 10), ("rss_mb_after_all", total)):
        measurement = await runner.measure("loop", accounts, float("inf"), loops=(upto - done) // 2)
        done += 2 * measurement.samples.loops + sum(measurement.samples.errors.values())
        memory[label] = round(runner.server.stats.memory_info().rss / 2**20, 1)
        memory["rpcs"] = done
        memory["errors"] = memory.get("errors", 0) + sum(measurement.samples.errors.values())
        _progress(f"leak check, {done} RPCs, RSS {memory[label]} MB", measurement)
    return memory


def _rates(measurement: _Measurement) -> tuple[float, float]:
    samples = measurement.samples
    rpcs = sum(len(values) for values in samples.latencies.values())
    return samples.loops / samples.elapsed, rpcs / samples.elapsed


def _summary(name: str, measurements: list[_Measurement], rate: float = 0.0) -> ScenarioResult:
    """Median throughput over the rounds; latency over all samples; CPU per loop over all loops."""
    samples = merge([m.samples for m in measurements])
    loops = max(samples.loops, 1)
    return ScenarioResult(
        name=name,
        loops_per_second=round(median(_rates(m)[0] for m in measurements), 1),
        rpcs_per_second=round(median(_rates(m)[1] for m in measurements), 1),
        latency_ms={rpc: percentiles(values) for rpc, values in samples.latencies.items()},
        errors=dict(samples.errors),
        meter_cpu_seconds_per_1000_loops=round(sum(m.meter_cpu for m in measurements) * 1000 / loops, 3),
        postgres_cpu_seconds_per_1000_loops=round(sum(m.postgres_cpu for m in measurements) * 1000 / loops, 3),
        peak_rss_mb=round(max(m.peak_rss for m in measurements) / 2**20, 1),
        loops=samples.loops,
        seconds=round(sum(m.samples.elapsed for m in measurements), 2),
        offered_rate=rate,
    )


def _progress(label: str, measurement: _Measurement) -> None:
    loops, rpcs = _rates(measurement)
    print(f"meter bench: {label}: {loops:.0f} loops/s, {rpcs:.0f} RPCs/s", flush=True)
