"""The benchmark's arithmetic and its seed data (the run itself is `meter bench`, not a test)."""

from __future__ import annotations

import json
from array import array
from collections import Counter
from dataclasses import replace
from pathlib import Path

import asyncpg
import grpc
import pytest
from conftest import StartMeter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meter.domain.callers import hash_token, new_token
from meter.storage.audit import audit
from meter.storage.engine import dsn
from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc
from meterlab.bench import against, coalesce, database_alone, floor, labels, load, reserve_wait, seed
from meterlab.bench.compare import Comparison
from meterlab.bench.load import Samples
from meterlab.bench.reads import ReadsReport
from meterlab.bench.report import Report, ScenarioResult, merge, percentiles
from meterlab.bench.runner import Options
from meterlab.testbed import ServerProcess
from support import RunningMeter


def result(
    name: str, loops: float, rpcs: float, rpc: str = "Reserve", p99: float = 2.0, meter_cpu: float = 1.0
) -> ScenarioResult:
    return ScenarioResult(
        name, loops, rpcs, {rpc: {"p50": 1.0, "p99": p99, "p99.9": 3.0}}, {}, meter_cpu, 0.5, 100.0, 10, 1.0
    )


class TestFigures:
    def test_percentiles_in_milliseconds(self) -> None:
        values = array("d", [i / 1000 for i in range(1, 1001)])  # 1..1000 ms
        assert percentiles(values) == {"p50": 501.0, "p99": 991.0, "p99.9": 1000.0}
        assert percentiles(array("d")) == {"p50": 0.0, "p99": 0.0, "p99.9": 0.0}

    def test_merge_adds_loops_errors_and_samples(self) -> None:
        one, two = Samples(loops=3, errors=Counter(UNAVAILABLE=1), elapsed=2.0), Samples(loops=4, elapsed=2.5)
        one.record("Reserve", 0.001)
        two.record("Reserve", 0.002)
        merged = merge([one, two])
        assert (merged.loops, dict(merged.errors), merged.elapsed) == (7, {"UNAVAILABLE": 1}, 2.5)
        assert list(merged.latencies["Reserve"]) == [0.001, 0.002]

    def test_ratios_table_json_and_chart(self, tmp_path: Path) -> None:
        report = Report(settings={"seconds": "1"})
        for scenario in (
            result("ceiling", 1000, 1000, "Health.Check", meter_cpu=0.25),
            result("floor", 600, 1200),
            result("many accounts", 300, 600),
            result("hot account", 270, 540),
            result("hot account, single bucket", 90, 180),
            result("half load", 150, 300, p99=6.0),
            result("ceiling at half load", 150, 150, "Health.Check", p99=2.0),
            result("large history", 290, 580),
            result("many accounts, limits on", 285, 570),
            result("hot account, limits on", 270, 540),
        ):
            report.scenarios[scenario.name] = scenario
        report.database_alone = {"many accounts": 500.0, "hot account": 2000.0, "hot account, single bucket": 800.0}
        report.calls_per_statement = 3.5
        ratios = report.ratios()
        assert ratios["1. hot / many accounts (>= 0.9)"] == 0.9
        assert ratios["2b. the same, database alone (pgbench)"] == 2.5
        assert ratios["2. hot / hot single bucket (>= 3)"] == 3.0
        assert ratios["3. many-accounts RPCs/s / ceiling RPCs/s (>= 0.6)"] == 0.6
        assert ratios["3b. many accounts / floor, loops/s (>= 0.9)"] == 0.5
        assert ratios["3c. many accounts / database alone, loops/s (>= 0.6)"] == 0.6
        assert ratios["3d. meter CPU per loop, many accounts / per ceiling RPC (<= 3)"] == 4.0
        assert ratios["5. Reserve p99 / ceiling p99 at half load (<= 3)"] == 3.0
        assert ratios["7. many accounts, limits on / off (>= 0.9)"] == 0.95
        assert ratios["8. hot account, limits on / off (>= 0.9)"] == 1.0
        assert ratios["9. hot account, limits on / many accounts, limits on (>= 0.9)"] == 0.947
        assert "hot account, single bucket" in report.table()
        assert (
            "database alone (pgbench, loops/s): many accounts 500, hot account 2000, hot account, single bucket 800"
            in report.table()
        )
        assert "calls per Reserve and Commit statement, many accounts (coalescing): 3.50" in report.table()
        json_path, chart = report.write(tmp_path)
        data = json.loads(json_path.read_text())
        assert data["scenarios"]["many accounts"]["rpcs_per_second"] == 600
        assert data["database_alone"]["hot account, single bucket"] == 800
        assert data["calls_per_statement"] == 3.5
        assert chart.read_bytes().startswith(b"\x89PNG")


async def test_seeded_accounts_and_history_reconcile(engine: AsyncEngine) -> None:
    accounts = await seed.funded_accounts(engine, "seedtest-", 3, buckets=4)
    await seed.history(engine, "seedtest-history-", 5, 40)
    assert accounts == ["seedtest-1", "seedtest-2", "seedtest-3"]
    report = await audit(engine)
    assert report.clean, report.discrepancies


async def test_pgbench_drives_the_one_statement_functions(database_url: str, engine: AsyncEngine) -> None:
    """The database-alone figures count only loops that placed and charged a hold: on funded
    accounts every loop does, on one account or spread over several; where the functions give up
    (an unknown account), the run is refused rather than reported fast."""
    binary = database_alone.pgbench()
    assert binary is not None, "pgbench ships with the embedded PostgreSQL"
    [account] = await seed.funded_accounts(engine, "pgbenchtest-", 1, buckets=1)
    rate = await database_alone.loops_per_second(
        binary, database_url, engine, database_alone.Accounts("pgbenchtest-", 1), 1, clients=2
    )
    assert rate > 0
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT held, used FROM buckets WHERE account_id = :a AND pool = 'purchased'"), {"a": account}
            )
        ).one()
    assert row.held == 0 and row.used > 0 and row.used % 60 == 0  # every loop committed 60 of its 100
    assert (await audit(engine, account)).clean
    several = await seed.funded_accounts(engine, "pgbenchmany-", 3, buckets=4)
    rate = await database_alone.loops_per_second(
        binary, database_url, engine, database_alone.Accounts("pgbenchmany-", 3), 1, clients=2
    )
    assert rate > 0
    for one in several:
        assert (await audit(engine, one)).clean
    with pytest.raises(RuntimeError, match="holds were committed"):  # no such account: nothing placed
        await database_alone.loops_per_second(
            binary, database_url, engine, database_alone.Accounts("pgbenchtest-missing-", 1), 1, clients=2
        )


async def test_seeded_calls_reconcile_with_their_totals_and_pages(engine: AsyncEngine, meter: RunningMeter) -> None:
    [account] = await seed.funded_accounts(engine, "seedcalls-", 1, buckets=4)
    await seed.calls(engine, account, 50, days=3, buckets=4)
    report = await audit(engine, account)
    assert report.clean, report.discrepancies
    usage = await meter.stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(account_id=account, kind=pb.ENTRY_KIND_USAGE, page_size=1000)
    )
    assert len(usage.entries) == 50 and all(e.usage.charged_tokens == 8 for e in usage.entries)
    assert all(dict(e.usage.labels)["team"].startswith("team-") for e in usage.entries)


def test_history_reads_table_and_ratios(tmp_path: Path) -> None:
    report = ReadsReport({"small": 1000, "big": 1_000_000}, 10)
    report.medians["GetUsage by day, 90 days"] = {"small": 2.0, "big": 3.0}
    report.p90s["GetUsage by day, 90 days"] = {"small": 2.5, "big": 3.5}
    assert report.ratios() == {"GetUsage by day, 90 days": 1.5}
    assert "GetUsage by day, 90 days                      2.00 (2.50)        3.00 (3.50)      1.500" in report.table()
    data = json.loads(report.write(tmp_path).read_text())
    assert data["ratios"] == {"GetUsage by day, 90 days": 1.5}


def test_leak_check_ratio_and_json(tmp_path: Path) -> None:
    report = Report(settings={}, memory={"rss_mb_after_first_tenth": 100.0, "rss_mb_after_all": 104.0, "rpcs": 10})
    assert report.ratios() == {"6. RSS after all RPCs / after the first tenth (<= 1.1)": 1.04}
    assert "rss_mb_after_all 104" in report.table()
    json_path, chart = report.write(tmp_path)
    assert chart is None
    assert json.loads(json_path.read_text())["memory"]["rpcs"] == 10


async def test_a_load_process_stops_after_its_loops(meter: RunningMeter, engine: AsyncEngine) -> None:
    accounts = await seed.funded_accounts(engine, "loadtest-", 2, buckets=2)
    samples = await load.run_async(
        load.Job("loop", meter.address, accounts, callers=4, seconds=float("inf"), max_loops=10)
    )
    assert (samples.loops, dict(samples.errors)) == (10, {})
    assert len(samples.latencies["Reserve"]) == len(samples.latencies["Commit"]) == 10


async def test_the_floor_debits_and_gives_back_what_a_call_did_not_use(database_url: str, engine: AsyncEngine) -> None:
    """The floor answers the load generator's loop with one guarded statement per RPC: what it
    holds and gives back shows on its balance row, and a Reserve it cannot cover is refused."""
    accounts = ["floor-a", "floor-b"]
    await floor.fund(engine, accounts, 1_000)
    server = ServerProcess(database_url, {"METER_DB_POOL_SIZE": "2"}, module="meterlab.bench.floor")
    try:
        await server.ready()
        job = load.Job("loop", server.address, accounts[:1], callers=2, seconds=60, max_loops=4)
        samples = await load.run_async(job)
        assert (samples.loops, dict(samples.errors)) == (4, {})
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT account_id, balance FROM bench_floor"))).all()
        balances: dict[str, int] = {row[0]: row[1] for row in rows}
        # Each loop holds 100 + 100 and the Commit of 100 + 40 gives back 60: 140 used per loop.
        assert {k: balances[k] for k in accounts} == {"floor-a": 1_000 - 4 * 140, "floor-b": 1_000}
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = meter_pb2_grpc.MeterServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Reserve(pb.ReserveRequest(account_id="floor-b", input_tokens=600, max_output_tokens=600))
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        server.stop()


async def test_a_load_process_presents_its_token(meters: StartMeter, engine: AsyncEngine) -> None:
    token = new_token()
    callers = f'[[caller]]\nname = "bench"\nrole = "operator"\ntoken_sha256 = "{hash_token(token)}"\n'
    meter = await meters(callers_toml=callers, webhook_token=token)
    accounts = await seed.funded_accounts(engine, "loadtoken-", 1, buckets=2)
    job = load.Job("loop", meter.address, accounts, callers=2, seconds=float("inf"), max_loops=6)
    assert (await load.run_async(job)).errors == Counter(UNAUTHENTICATED=6)
    samples = await load.run_async(replace(job, token=token))
    assert (samples.loops, dict(samples.errors)) == (6, {})


async def test_reserve_wait_compares_two_servers_side_by_side(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`meter bench --reserve-wait` in miniature: both servers measured on both scenarios in
    every round, with their shares of Reserves taken from all rows read from each server's /metrics."""
    monkeypatch.setenv("METER_DATABASE_URL", database_url)  # a fresh database on the tests' server
    options = Options(seconds=1.0, rounds=2, concurrency=4, processes=1, accounts=20, out=tmp_path)
    admin = await asyncpg.connect(dsn(database_url))
    databases = "SELECT datname FROM pg_database WHERE datname LIKE 'meter_bench_wait_%'"
    existing = {row[0] for row in await admin.fetch(databases)}
    try:
        comparison = await reserve_wait.reserve_wait(options)
    finally:  # the database the run created, and only it
        for (name,) in await admin.fetch(databases):
            if name not in existing:
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
    labels = [f"{scenario}, {name}" for scenario in ("many accounts", "hot account") for name in ("no wait", "wait")]
    assert sorted(comparison.report.scenarios) == sorted(labels)
    for label in labels:
        result = comparison.report.scenarios[label]
        assert result.loops > 0 and result.errors == {}
        assert len(comparison.across_rows[label]) == 2
        assert all(0.0 <= share <= 1.0 for share in comparison.across_rows[label])
        assert len(comparison.calls_per_statement[label]) == 2
        assert all(size >= 1.0 for size in comparison.calls_per_statement[label])
    assert comparison.report.settings["mode"] == "reserve-wait"
    printed = reserve_wait.ratios(comparison)
    assert "hot account, wait / no wait" in printed and "no wait: hot / many accounts" in printed


@pytest.mark.skipif(not (Path(__file__).parents[1] / ".git").exists(), reason="not a git checkout")
async def test_against_serves_another_revision_on_a_database_of_its_own(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`meter bench --against REV` in miniature, against this checkout's own commit: REV's tree is
    extracted and served beside this one, each on its own database, every scenario measured on both."""
    monkeypatch.setenv("METER_DATABASE_URL", database_url)
    monkeypatch.chdir(Path(__file__).parents[1])  # git answers for the repository the command runs in
    options = Options(seconds=1.0, rounds=2, concurrency=4, processes=1, accounts=20, out=tmp_path, data_dir=tmp_path)
    admin = await asyncpg.connect(dsn(database_url))
    databases = "SELECT datname FROM pg_database WHERE datname LIKE 'meter_bench_against_%'"
    existing = {row[0] for row in await admin.fetch(databases)}
    try:
        comparison = await against.against(options, "HEAD")
        created = {row[0] for row in await admin.fetch(databases)} - existing
    finally:
        for (name,) in await admin.fetch(databases):
            if name not in existing:
                await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
    assert len(created) == 2, "each revision on a database its own migrations made"
    (tree,) = (tmp_path / "against").iterdir()
    assert (tree / "src" / "meter" / "v1" / "meter_pb2.py").exists()  # its generated code where an install puts it
    labels = [f"{scenario}, {name}" for scenario in against.SCENARIOS for name in ("HEAD", "this")]
    assert sorted(comparison.report.scenarios) == sorted(labels)
    for label in labels:
        assert comparison.report.scenarios[label].loops > 0 and comparison.report.scenarios[label].errors == {}
    assert comparison.report.settings["mode"] == "against HEAD"
    printed = against.ratios(comparison, "HEAD")
    assert printed.count("this/HEAD loops/s") == len(against.SCENARIOS)


def test_coalesce_compares_each_in_flight_setting_with_one_statement_per_call() -> None:
    """`meter bench --coalesce`'s servers differ only in METER_COALESCE, and its ratios are each
    setting over one statement per call, with the calls per statement of every scenario."""
    configurations = coalesce.configurations()
    assert {name: config.env for name, config in configurations.items()} == {
        "alone": {"METER_COALESCE": "0"},
        "coalesce 1": {"METER_COALESCE": "1"},
        "coalesce 4": {"METER_COALESCE": "4"},
    }
    comparison = Comparison(Report(settings={}))
    for scenario in ("many accounts", "hot account"):
        for name, loops in (("alone", 100), ("coalesce 1", 150), ("coalesce 4", 120)):
            comparison.report.scenarios[f"{scenario}, {name}"] = result(f"{scenario}, {name}", loops, 2 * loops)
            comparison.calls_per_statement[f"{scenario}, {name}"] = [1.0 if name == "alone" else 6.0, 5.0]
    printed = coalesce.ratios(comparison)
    assert "many accounts, coalesce 1 / alone: loops/s 1.500, meter CPU/loop 1.000" in printed
    assert "hot account, coalesce 4 / alone: loops/s 1.200" in printed
    assert "many accounts, coalesce 1: 5.50 calls per statement (median round)" in printed


async def test_labelled_loops_carry_labels_and_every_token_class_and_count_against_budgets(
    meter: RunningMeter, engine: AsyncEngine
) -> None:
    """The labelled scenario's calls, on budgeted accounts: each Commit lands in its team's and
    API key's budget, and its usage in the day's totals by its summed labels."""
    accounts = await seed.MANY_BUDGETED.fund(engine, 2)
    samples = await load.run_async(
        load.Job("labelled", meter.address, accounts, callers=2, seconds=float("inf"), max_loops=6)
    )
    assert (samples.loops, dict(samples.errors)) == (6, {})
    async with engine.connect() as connection:
        budgets = (
            await connection.execute(
                text(
                    "SELECT g.unit, sum(b.used) AS used FROM budgets AS g JOIN budget_buckets AS b USING "
                    "(account_id, budget_id) WHERE g.account_id = ANY(:accounts) GROUP BY 1 ORDER BY 1"
                ),
                {"accounts": accounts},
            )
        ).all()
        summed = (
            (
                await connection.execute(
                    text(
                        "SELECT DISTINCT labels ? 'team' AND labels ? 'api_key' FROM usage_daily "
                        "WHERE account_id = ANY(:a)"
                    ),
                    {"a": accounts},
                )
            )
            .scalars()
            .all()
        )
    # basic: 40 input + 50 cached + 10 cache writes + 30 output + 10 reasoning, all weighing 1.
    assert [(unit, int(used)) for unit, used in budgets] == [("cost_micros", 0), ("tokens", 6 * 140)]
    assert summed == [True]


def test_labels_ratios_compare_each_scenario_with_plain() -> None:
    report = Report(
        settings={},
        scenarios={
            "plain": result("plain", 100.0, 200.0),
            "labelled": result("labelled", 95.0, 190.0, meter_cpu=1.1),
            "labelled, budgets": result("labelled, budgets", 90.0, 180.0),
        },
    )
    printed = labels.ratios(report)
    assert "labelled / plain: loops/s 0.950 (>= 0.9), meter CPU/loop 1.100, PostgreSQL CPU/loop 1.000" in printed
    assert "labelled, budgets / plain: loops/s 0.900" in printed
