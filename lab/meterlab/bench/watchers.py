"""`meter bench --watchers`: what every-account watchers replaying history cost Reserve and Commit.

Two servers on one database, the same Reserve→Commit loops on many accounts: "no watchers", then
the same server with WATCHERS WatchEvents streams on every account's events replaying the whole
history from the start again and again ("bounded": METER_WATCH_READS as it is by default), and a
second server where their reads are not bounded ("unbounded": METER_WATCH_READS=1000, as before
the bound). Scenarios interleaved round after round, order reversed every other round; the
report's latencies are Reserve's and Commit's while the watchers read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import grpc
from sqlalchemy import text

from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc
from meterlab.bench import seed
from meterlab.bench.report import Report
from meterlab.bench.runner import Options, _progress, _Runner, _summary
from meterlab.testbed import LabDatabase, ServerProcess

WATCHERS = 50
HISTORY_ACCOUNTS = 100
EVENTS_PER_ACCOUNT = 500  # 50 000 events: each replay reads 50 pages


async def watchers(options: Options) -> Report:
    database = await LabDatabase.create("meter_bench_watchers", options.data_dir)
    servers = {
        "bounded": ServerProcess(database.url),
        "unbounded": ServerProcess(database.url, {"METER_WATCH_READS": "1000"}),
    }
    pool = ProcessPoolExecutor(max_workers=options.processes, mp_context=get_context("spawn"))
    report = Report(settings={k: str(v) for k, v in options.__dict__.items()} | {"mode": "watchers"})
    try:
        accounts = await seed.MANY.fund(database.engine, options.accounts)
        await _history(database, accounts[:HISTORY_ACCOUNTS])
        await seed.settle_in(database.engine)
        for server in servers.values():
            await server.ready()
        runners = {name: _Runner(options, pool, server, database.postgres_process) for name, server in servers.items()}
        plan = [("no watchers", "bounded", 0), ("watchers, bounded", "bounded", WATCHERS),
                ("watchers, unbounded", "unbounded", WATCHERS)]  # fmt: skip
        rounds: dict[str, list] = {name: [] for name, _, _ in plan}
        for number in range(1, options.rounds + 1):
            for name, target, count in plan if number % 2 else plan[::-1]:
                async with _replaying(servers[target].address, count) as replays:
                    measurement = await runners[target].measure("loop", accounts, options.seconds / options.rounds)
                rounds[name].append(measurement)
                _progress(f"round {number}: {name} ({replays[0]} events replayed)", measurement)
        for name, _, _ in plan:
            report.scenarios[name] = _summary(name, rounds[name])
    finally:
        pool.shutdown()
        for server in servers.values():
            server.stop()
        await database.close()
    return report


async def _history(database: LabDatabase, accounts: list[str]) -> None:
    """Events to replay, written by meter_emit as the service writes them."""
    async with database.engine.begin() as connection:
        for account in accounts:
            await connection.execute(
                text(
                    "SELECT meter_emit(:account, 'balance.adjusted', CAST(:data AS jsonb), now()) "
                    "FROM generate_series(1, :count)"
                ),
                {"account": account, "data": '{"pool": "purchased", "delta": 0}', "count": EVENTS_PER_ACCOUNT},
            )


@contextlib.asynccontextmanager
async def _replaying(address: str, count: int) -> AsyncIterator[list[int]]:
    """`count` watchers of every account's events, each replaying from the start until the
    history is read, then again, until the block ends. Yields the events read so far."""
    replayed = [0]
    total = HISTORY_ACCOUNTS * EVENTS_PER_ACCOUNT

    async def watch(stub: meter_pb2_grpc.MeterServiceStub) -> None:
        while True:
            seen = 0
            async for _ in stub.WatchEvents(pb.WatchEventsRequest()):
                seen += 1
                replayed[0] += 1
                if seen >= total:
                    break

    async with grpc.aio.insecure_channel(address) as channel:
        stub = meter_pb2_grpc.MeterServiceStub(channel)
        tasks = [asyncio.create_task(watch(stub)) for _ in range(count)]
        try:
            yield replayed
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def ratios(report: Report) -> str:
    """Reserve's p50 and p99 in each scenario, and loops per second against no watchers."""
    alone = report.scenarios["no watchers"]
    lines = []
    for name, this in report.scenarios.items():
        reserve = this.latency_ms["Reserve"]
        lines.append(
            f"{name}: Reserve p50 {reserve['p50']:.1f} ms, p99 {reserve['p99']:.1f} ms, "
            f"loops/s {this.loops_per_second / alone.loops_per_second:.3f} of no watchers"
        )
    return "\n".join(lines)
