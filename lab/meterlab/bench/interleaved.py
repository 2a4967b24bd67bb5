"""Closed-loop scenarios on one server, interleaved round after round (the order reversed every
other round), each reported as the median of its rounds: what `--labels` and `--grants` compare."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from sqlalchemy.ext.asyncio import AsyncEngine

from meterlab.bench import seed
from meterlab.bench.report import Report
from meterlab.bench.runner import Options, _progress, _Runner, _summary
from meterlab.testbed import LabDatabase, ServerProcess

# A scenario: its name, the load's kind ("loop", "labelled") and the accounts it runs on.
Plan = list[tuple[str, str, list[str]]]


async def interleaved(options: Options, database_name: str, fund: Callable[[AsyncEngine], Awaitable[Plan]]) -> Report:
    database = await LabDatabase.create(database_name, options.data_dir)
    server = ServerProcess(database.url)
    pool = ProcessPoolExecutor(max_workers=options.processes, mp_context=get_context("spawn"))
    report = Report(settings={k: str(v) for k, v in options.__dict__.items()})
    try:
        plan = await fund(database.engine)
        await seed.settle_in(database.engine)
        await server.ready()
        runner = _Runner(options, pool, server, database.postgres_process)
        rounds: dict[str, list] = {name: [] for name, _, _ in plan}
        for number in range(1, options.rounds + 1):
            for name, kind, accounts in plan if number % 2 else plan[::-1]:
                measurement = await runner.measure(kind, accounts, options.seconds / options.rounds)
                rounds[name].append(measurement)
                _progress(f"round {number}: {name}", measurement)
        for name, _, _ in plan:
            report.scenarios[name] = _summary(name, rounds[name])
    finally:
        pool.shutdown()
        server.stop()
        await database.close()
    return report


def ratios(report: Report, base: str, others: list[str], target: float) -> str:
    """Each scenario's loops/s and CPU per loop over the base scenario's."""
    plain = report.scenarios[base]
    lines = []
    for name in others:
        this = report.scenarios[name]
        lines.append(
            f"{name} / {base}: loops/s {this.loops_per_second / plain.loops_per_second:.3f} (>= {target}), "
            f"meter CPU/loop {this.meter_cpu_seconds_per_1000_loops / plain.meter_cpu_seconds_per_1000_loops:.3f}, "
            f"PostgreSQL CPU/loop "
            f"{this.postgres_cpu_seconds_per_1000_loops / plain.postgres_cpu_seconds_per_1000_loops:.3f}"
        )
    return "\n".join(lines)
