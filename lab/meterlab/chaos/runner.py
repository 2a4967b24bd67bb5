"""`meter chaos`: the workload against real servers on a real PostgreSQL, one fault per scenario,
and the checker after each (while nothing is in flight).

The servers are `meter serve` subprocesses (they can be SIGKILLed); Stripe's webhooks reach them
through a separate `meter webhooks` adapter process, so the adapter stays up while meter is down.
The clock scenario runs its server in this process, because only there can the clock be moved;
it comes last, since the clock does not go back. Every balance event also goes out as a webhook to
an endpoint in this process that fails a share of them, beside a tarpit and a redirecting
endpoint (webhook_checks), checked after each scenario with the rest.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from meter import bootstrap
from meter.config import Settings
from meter.storage.clock import DatabaseClock
from meterlab.chaos import billing, checker, webhook_checks
from meterlab.chaos.history import History, Outcome
from meterlab.chaos.report import ChaosReport, ScenarioReport
from meterlab.chaos.webhook_checks import Receivers, WebhookSink
from meterlab.chaos.workload import Settings as WorkloadSettings
from meterlab.chaos.workload import Workload
from meterlab.testbed import LabDatabase, ServerProcess, free_port

SECRET = "whsec_chaos"
NO_FAULT = "no fault"
KILLED = "server killed (SIGKILL) and restarted"
CONNECTIONS_TERMINATED = "database connections terminated"
POSTGRES_RESTARTED = "postgres restarted"
METER_DOWN = "webhook adapter up, meter down"
REPLICAS = "two replicas, both sweeping, short holds"
CLOCK_JUMP = "clock moved across a period boundary"
SCENARIOS = (NO_FAULT, KILLED, CONNECTIONS_TERMINATED, POSTGRES_RESTARTED, METER_DOWN, REPLICAS, CLOCK_JUMP)


@dataclass(frozen=True)
class Options:
    seconds: float = 20.0  # per scenario
    clients: int = 16
    seed: int = 1
    scenarios: tuple[str, ...] = SCENARIOS
    data_dir: Path = Path(".meter-chaos")
    database_url: str | None = None  # a server to create the database on (else embedded)
    hostile_endpoints: bool = True  # a tarpit and a redirecting endpoint beside the healthy one


@dataclass
class _Bed:
    database: LabDatabase
    primary: ServerProcess
    adapter: subprocess.Popen[bytes]
    webhook_url: str
    workload: Workload
    history: History
    receivers: Receivers
    extra: list[ServerProcess] = field(default_factory=list)


async def chaos(options: Options, progress: Callable[[str], None] = print) -> ChaosReport:
    database = await LabDatabase.create("meter_chaos", options.data_dir, options.database_url)
    receivers = Receivers(WebhookSink(seed=options.seed), hostile=options.hostile_endpoints)
    await receivers.start()
    primary = ServerProcess(
        database.url,
        {
            "METER_STRIPE_WEBHOOK_SECRET": SECRET,
            "METER_SHUTDOWN_GRACE_SECONDS": "3",
            **webhook_checks.SERVER_ENV,
            **billing.SERVER_ENV,
        },
    )
    http = f"127.0.0.1:{free_port()}"
    adapter = subprocess.Popen(
        [sys.executable, "-m", "meter.cli", "webhooks", "--target", primary.address],
        env=primary.env | {"METER_HTTP_ADDR": http},
        stdout=subprocess.DEVNULL,
    )
    history = History()
    webhook_url = f"http://{http}/webhooks/stripe"
    workload = Workload(history, [primary.address], webhook_url, SECRET, WorkloadSettings(), options.seed)
    bed = _Bed(database, primary, adapter, webhook_url, workload, history, receivers)
    report = ChaosReport(seconds_per_scenario=options.seconds, clients=options.clients)
    started = time.monotonic()
    try:
        await primary.ready()
        await asyncio.to_thread(receivers.register, primary.env)  # every event from here on is sent to them
        await workload.fund()
        for name in options.scenarios:
            scenario = await _scenario(bed, name, options)
            report.scenarios.append(scenario)
            progress(scenario.line())
    finally:
        report.seconds = time.monotonic() - started
        report.operations = history.counts()
        report.bugs = list(workload.bugs)
        report.hostile_endpoints = receivers.summary()
        report.unanswered = [
            f"{op.kind} {op.key} after {op.attempts} attempts: {op.reason}"
            for op in history.ops
            if op.outcome is Outcome.UNKNOWN
        ]
        await _tear_down(bed)
    return report


async def _tear_down(bed: _Bed) -> None:
    """Stop everything, even after a failure half-way (no server or database left running)."""
    try:
        await bed.workload.close()
    finally:
        for server in [bed.primary, *bed.extra]:
            try:
                server.stop()
            except subprocess.TimeoutExpired:
                server.kill()
        bed.adapter.terminate()
        bed.adapter.wait(timeout=30)
        await bed.receivers.stop()
        await bed.database.close()


async def _scenario(bed: _Bed, name: str, options: Options) -> ScenarioReport:
    fault, after = _FAULTS[name]
    scenario = ScenarioReport(name, ops_before=len(bed.history.ops))
    arrivals = len(bed.receivers.sink.first_delivered)
    if name == POSTGRES_RESTARTED and bed.database.postgres is None:
        scenario.skipped = "PostgreSQL is not ours to restart (METER_DATABASE_URL is set)"
        return scenario
    if name == CLOCK_JUMP:  # events made on the moved clock: their delays are not measured
        return await _clock_scenario(bed, scenario, options)
    if name == REPLICAS:
        replica = ServerProcess(
            bed.database.url, {"METER_STRIPE_WEBHOOK_SECRET": SECRET, **webhook_checks.SERVER_ENV, **billing.SERVER_ENV}
        )
        bed.extra.append(replica)
        await replica.ready()
        bed.workload.retarget([bed.primary.address, replica.address])
        bed.workload.settings.short_ttl_share = 0.25
    await _run_with_fault(bed, scenario, options, fault)
    if after:
        await after(bed)
    await _check(bed, scenario, arrivals)
    return scenario


async def _run_with_fault(
    bed: _Bed, scenario: ScenarioReport, options: Options, fault: Callable[[_Bed], Awaitable[None]] | None
) -> None:
    end = time.monotonic() + options.seconds
    clients = [asyncio.create_task(bed.workload.client(lambda: time.monotonic() > end)) for _ in range(options.clients)]
    if fault is not None:
        await asyncio.sleep(options.seconds / 3)
        injected = time.monotonic()
        await fault(bed)
        scenario.faults += 1
        await bed.workload.probe()
        scenario.recovery_seconds = time.monotonic() - injected
    await asyncio.gather(*clients)


async def _check(bed: _Bed, scenario: ScenarioReport, arrivals: int | None = None) -> None:
    """The checker, and the webhooks' (the delays of what arrived since `arrivals`, if given)."""
    await bed.database.engine.dispose()  # its connections may have been terminated by the fault
    findings = await checker.check(bed.database.engine, bed.history)
    webhook_count, webhook_violations, delays = await webhook_checks.check(bed.database.engine, bed.receivers, arrivals)
    scenario.webhook_delays = delays
    scenario.checks = findings.checks + webhook_count
    scenario.violations = [str(v) for v in findings.violations] + webhook_violations
    scenario.ops = len(bed.history.ops) - scenario.ops_before
    scenario.acked = sum(op.acked for op in bed.history.ops[scenario.ops_before :])


# --- the faults ----------------------------------------------------------------------------


async def _kill_and_restart(bed: _Bed) -> None:
    bed.primary.kill()
    bed.primary.start()  # what a supervisor does: no manual step


async def _terminate_connections(bed: _Bed) -> None:
    await bed.database.terminate_connections()


async def _restart_postgres(bed: _Bed) -> None:
    assert bed.database.postgres is not None
    await asyncio.to_thread(bed.database.postgres.restart)


async def _meter_down(bed: _Bed) -> None:
    """Meter stops for a few seconds while the adapter keeps answering Stripe (503: retry)."""
    bed.primary.stop()
    await asyncio.sleep(3)
    bed.primary.start()


async def _replica_leaves(bed: _Bed) -> None:
    bed.workload.retarget([bed.primary.address])
    bed.workload.settings.short_ttl_share = 0.0
    for replica in bed.extra:
        replica.stop()
    bed.extra.clear()


_FAULTS: dict[str, tuple[Callable[[_Bed], Awaitable[None]] | None, Callable[[_Bed], Awaitable[None]] | None]] = {
    NO_FAULT: (None, None),
    KILLED: (_kill_and_restart, None),
    CONNECTIONS_TERMINATED: (_terminate_connections, None),
    POSTGRES_RESTARTED: (_restart_postgres, None),
    METER_DOWN: (_meter_down, None),
    REPLICAS: (_kill_and_restart, _replica_leaves),  # one replica dies while the other serves
    CLOCK_JUMP: (None, None),
}


async def _clock_scenario(bed: _Bed, scenario: ScenarioReport, options: Options) -> ScenarioReport:
    """The subprocess gives way to a server in this process on the same ports, whose clock jumps
    to just after the next calendar month starts: every account's period ends mid-traffic."""
    bed.primary.stop()
    clock = DatabaseClock()
    settings = replace(
        Settings(),
        database_url=bed.database.url,
        grpc_addr=bed.primary.address,
        http_addr=bed.primary.http_address,
        connect_addr="off",  # as the subprocess it stands in for (its default is one fixed port)
        stripe_webhook_secrets=(SECRET,),
        shutdown_grace_seconds=3.0,
        catalog_path=billing.CATALOG_PATH,
        **webhook_checks.SERVER_SETTINGS,
    )
    service = await bootstrap.start(settings, clock=clock)
    try:

        async def jump(_: _Bed) -> None:
            now = datetime.now(UTC) + clock.offset
            month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            boundary = (month + timedelta(days=32)).replace(day=1)
            clock.advance(boundary - now + timedelta(seconds=30))
            bed.workload.clock_offset_seconds = clock.offset_seconds

        await _run_with_fault(bed, scenario, options, jump)
        await _check(bed, scenario)
    finally:
        await service.stop()
    return scenario
