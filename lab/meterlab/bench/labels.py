"""`meter bench --labels`: what labels, token classes and budgets cost the hot path.

One server, three closed-loop scenarios interleaved round after round (order reversed every
other round): "plain" (Reserve→Commit of input and output, no labels), "labelled" (the calls a
product's proxy sends: team, API key, agent and a session of its own as labels, and every token
class at Commit) and "labelled, budgets" (the same calls, on accounts whose team has a tokens
budget and whose API key a cost budget, that none reaches). The ratios to plain are the targets
(>= 0.9); CPU per loop says where the difference goes.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from meterlab.bench import seed
from meterlab.bench.report import Report
from meterlab.bench.runner import Options, _progress, _Runner, _summary
from meterlab.testbed import LabDatabase, ServerProcess

TARGET = 0.9


async def labels(options: Options) -> Report:
    database = await LabDatabase.create("meter_bench_labels", options.data_dir)
    server = ServerProcess(database.url)
    pool = ProcessPoolExecutor(max_workers=options.processes, mp_context=get_context("spawn"))
    report = Report(settings={k: str(v) for k, v in options.__dict__.items()})
    try:
        plain = await seed.MANY.fund(database.engine, options.accounts)
        budgeted = await seed.MANY_BUDGETED.fund(database.engine, options.accounts)
        await seed.settle_in(database.engine)
        await server.ready()
        runner = _Runner(options, pool, server, database.postgres_process)
        plan = [("plain", "loop", plain), ("labelled", "labelled", plain), ("labelled, budgets", "labelled", budgeted)]
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


def ratios(report: Report) -> str:
    plain = report.scenarios["plain"]
    lines = []
    for name in ("labelled", "labelled, budgets"):
        this = report.scenarios[name]
        lines.append(
            f"{name} / plain: loops/s {this.loops_per_second / plain.loops_per_second:.3f} (>= {TARGET}), "
            f"meter CPU/loop {this.meter_cpu_seconds_per_1000_loops / plain.meter_cpu_seconds_per_1000_loops:.3f}, "
            f"PostgreSQL CPU/loop "
            f"{this.postgres_cpu_seconds_per_1000_loops / plain.postgres_cpu_seconds_per_1000_loops:.3f}"
        )
    return "\n".join(lines)
