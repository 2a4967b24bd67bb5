"""The shipped MeterClient through outages: proxies built on `meter.client` as a product would use
it (not the chaos suite's own clients, which retry for as long as it takes) call Reserve then
Commit in a loop while meter is SIGKILLed and restarted, its database restarted (or, when it is
not ours, its connections terminated), and meter stopped for 10 s. One proxy dies while meter is
down and starts again on its spool, a spool holding rows another client version wrote (to be set
aside); one proxy's spool is full from the start (every call sent without it); one fails open
within a budget. Afterwards, once the spools are empty, every call a proxy was answered (or let
through) for must be charged exactly once with the usage it reported, and `meter audit` must
pass."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text

from meter.client import MeterClient, MeterRpcError, Spooled
from meter.client.fail_open import RESERVATION_PREFIX, FailOpen
from meter.client.spool import SPOOL_ERRORS, CommitSpool
from meter.v1 import meter_pb2 as pb
from meterlab.testbed import LabDatabase, ServerProcess, audit

SETTLE_SECONDS = 60.0
# Rows another client version left in a proxy's spool: set aside, never in the way of the others.
_OTHER_VERSION_ROWS = [("CommitBatch", b"\x0a\x03abc"), ("Commit", b"\xff\xff\xff")]
_FULL_SPOOL_BYTES = 1  # less than the spool's tables need: it cannot take a single call

# Each call of the run as meter recorded it, with what the ledger charged its reservation.
_CALLS = """
SELECT h.account_id, h.request_id, h.status, h.usage_input_tokens, h.usage_output_tokens, h.charged_tokens,
       (SELECT -coalesce(sum(l.amount), 0) FROM ledger_entries AS l
        WHERE l.kind = 'usage' AND l.reservation_id = h.account_id || '/' || replace(CAST(h.hold_id AS text), '-', ''))
       AS ledger
FROM holds AS h WHERE h.account_id LIKE 'outage-%'
"""


@dataclass(frozen=True)
class Options:
    seconds_between_faults: float = 6.0
    proxies: int = 4
    accounts: int = 6
    seed: int = 1
    data_dir: Path = Path(".meter-chaos")
    database_url: str | None = None


@dataclass
class Call:
    account: str
    request_id: str
    reservation_id: str
    input_tokens: int
    output_tokens: int

    @property
    def let_through(self) -> bool:
        return self.reservation_id.startswith(RESERVATION_PREFIX)


@dataclass
class OutageReport:
    faults: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [
            f"shipped client through {len(self.faults)} faults ({', '.join(self.faults)}) in {self.seconds:.0f} s:",
            f"  {self.calls} calls answered or let through; "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())),
            f"  {len(self.violations)} violations",
        ]
        return "\n".join(lines + [f"VIOLATION {v}" for v in self.violations[:30]])


class _Proxy:
    def __init__(
        self,
        address: str,
        spool: Path,
        fail_open: FailOpen | None,
        budget: float,
        rng: random.Random,
        spool_max_bytes: int | None = None,
    ) -> None:
        self.address, self.spool, self.fail_open, self.budget, self.rng = address, spool, fail_open, budget, rng
        self.spool_max_bytes = spool_max_bytes
        self.client = self._client()
        self.task: asyncio.Task[None] | None = None

    def _client(self) -> MeterClient:
        return MeterClient(
            self.address,
            spool=self.spool,
            spool_max_bytes=self.spool_max_bytes,
            fail_open=self.fail_open,
            settle_budget_seconds=self.budget,
        )

    def start(self, accounts: list[str], calls: list[Call], report: OutageReport, stop: asyncio.Event) -> None:
        self._run = (accounts, calls, report, stop)
        self.task = asyncio.create_task(self._loop(*self._run))

    async def crash_and_restart(self) -> None:
        """The proxy process dies (its coroutine cancelled wherever it was) and starts again on its spool."""
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.client.close()
        self.client = self._client()
        await self.client.__aenter__()  # drains what the spool kept, in the background
        self.task = asyncio.create_task(self._loop(*self._run))

    async def _loop(self, accounts: list[str], calls: list[Call], report: OutageReport, stop: asyncio.Event) -> None:
        while not stop.is_set():
            account, request_id = self.rng.choice(accounts), uuid.uuid4().hex
            reserved_input, max_output = self.rng.randint(1, 200), self.rng.randint(1, 200)
            try:
                hold = await self.client.reserve(
                    account_id=account, model="basic", input_tokens=reserved_input, max_output_tokens=max_output,
                    request_id=request_id,
                )  # fmt: skip
            except MeterRpcError as refused:
                report.counts[f"reserve refused {refused.reason or refused.code.name}"] += 1
                await asyncio.sleep(0.05)
                continue
            call = Call(account, request_id, hold.reservation_id, reserved_input, self.rng.randint(0, max_output))
            calls.append(call)
            report.counts["let through" if call.let_through else "reserved"] += 1
            try:
                await self.client.commit(
                    reservation_id=hold.reservation_id, input_tokens=call.input_tokens, output_tokens=call.output_tokens
                )
            except Spooled:
                report.counts["spooled"] += 1
            except MeterRpcError as failure:
                report.violations.append(f"Commit of {call.reservation_id} failed: {failure}")


async def client_outages(options: Options) -> OutageReport:
    report = OutageReport()
    started = time.monotonic()
    database = await LabDatabase.create("meter_outages", options.data_dir, options.database_url)
    server = ServerProcess(database.url, {"METER_SHUTDOWN_GRACE_SECONDS": "3"})
    proxies: list[_Proxy] = []
    stop = asyncio.Event()
    try:
        await server.ready()
        rng = random.Random(options.seed)
        accounts = await _funded_accounts(server.address, options.accounts)
        calls: list[Call] = []
        spools = options.data_dir / f"spools-{uuid.uuid4().hex[:8]}"
        _other_version_rows(spools / "proxy-0.sqlite")  # the proxy that restarts during the outage
        for n in range(options.proxies):
            # The last fails open; of the others, half keep trying for the default 30 s (longer than
            # meter is down), half for 3 s, after which their Commits wait in the spool. The second
            # keeps trying for 30 s on a spool that is full from the start.
            fail_open = FailOpen(tokens_per_minute=2_000) if n == options.proxies - 1 else None
            budget = 30.0 if n % 2 and fail_open is None else 3.0
            spool = spools / f"proxy-{n}.sqlite"
            full = _FULL_SPOOL_BYTES if n == 1 else None
            proxies.append(_Proxy(server.address, spool, fail_open, budget, random.Random(rng.random()), full))
        for proxy in proxies:
            proxy.start(accounts, calls, report, stop)
        pause = options.seconds_between_faults
        await asyncio.sleep(pause)
        server.kill()
        server.start()
        report.faults.append("meter SIGKILLed and restarted")
        await asyncio.sleep(pause)
        await _database_fault(database, report)
        await asyncio.sleep(pause)
        server.stop()
        await asyncio.sleep(5)
        await proxies[0].crash_and_restart()  # while meter is down, with what it spooled
        await asyncio.sleep(5)
        server.start()
        report.faults.append("meter down 10 s, a proxy restarted on its spool meanwhile")
        await asyncio.sleep(pause)
        stop.set()
        await asyncio.gather(*(p.task for p in proxies if p.task is not None))
        await _settled(proxies, report)
        _spool_troubles(proxies, report)
        report.calls = len(calls)
        report.violations += await _charged_once(database, calls)
        clean, printed = await asyncio.to_thread(audit, database.engine.url.render_as_string(hide_password=False))
        if not clean:
            report.violations.append(f"meter audit: {printed[:1000]}")
    finally:
        stop.set()
        for proxy in proxies:
            if proxy.task is not None:
                proxy.task.cancel()
            await proxy.client.close()
        server.stop()
        await database.close()
        report.seconds = time.monotonic() - started
    return report


async def _funded_accounts(address: str, count: int) -> list[str]:
    accounts = [f"outage-{n}-{uuid.uuid4().hex[:6]}" for n in range(count)]
    async with MeterClient(address) as client:
        for account in accounts:
            await client.set_plan(account_id=account, plan_id="enterprise")  # set per account: no rate limit
            await client.adjust(
                account_id=account, pool=pb.POOL_PURCHASED, delta=10_000_000, reason="outages", request_id=account
            )
    return accounts


async def _database_fault(database: LabDatabase, report: OutageReport) -> None:
    if database.postgres is not None:
        await asyncio.to_thread(database.postgres.restart)
        report.faults.append("PostgreSQL restarted")
        return
    await database.terminate_connections()
    report.faults.append("database connections terminated")


async def _settled(proxies: list[_Proxy], report: OutageReport) -> None:
    """Every spool empty (each client drains in the background), or a violation after a deadline."""
    deadline = time.monotonic() + SETTLE_SECONDS
    for proxy in proxies:
        await proxy.client.drain_spool()
    while any(p.client.spool_depth for p in proxies):
        if time.monotonic() > deadline:
            left = sum(p.client.spool_depth for p in proxies)
            report.violations.append(f"{left} calls still spooled {SETTLE_SECONDS:.0f} s after meter came back")
            return
        await asyncio.sleep(0.2)


def _other_version_rows(path: Path) -> None:
    CommitSpool(path).close()  # its tables
    with contextlib.closing(sqlite3.connect(path)) as spool, spool:
        spool.executemany("INSERT INTO spooled (method, request, spooled_at) VALUES (?, ?, 0)", _OTHER_VERSION_ROWS)


def _spool_troubles(proxies: list[_Proxy], report: OutageReport) -> None:
    """The rows of another version set aside (and only those); the calls the full spool could not
    take counted (each one sent without it: the charge check says whether it arrived)."""
    for proxy in proxies:
        report.counts["sent without the spool"] += int(SPOOL_ERRORS.labels(str(proxy.spool), "add")._value.get())
        if proxy.spool_max_bytes is not None:
            continue
        with contextlib.closing(sqlite3.connect(proxy.spool)) as spool:
            aside = spool.execute("SELECT method, request FROM set_aside ORDER BY id").fetchall()
        report.counts["set aside"] += len(aside)
        expected = _OTHER_VERSION_ROWS if proxy is proxies[0] else []
        if aside != expected:
            report.violations.append(f"{proxy.spool}: set aside {aside}, not {expected}")


async def _charged_once(database: LabDatabase, calls: list[Call]) -> list[str]:
    """Each call is one committed hold (by its request_id) charged its reported usage, and the
    ledger's usage entries of its reservation sum to that charge: nothing lost, nothing twice."""
    async with database.engine.connect() as connection:
        rows = (await connection.execute(text(_CALLS))).all()
    holds = {(row.account_id, row.request_id): row for row in rows}
    violations = []
    for call in calls:
        hold = holds.get((call.account, call.request_id))
        expected = call.input_tokens + call.output_tokens  # basic: weights 1
        if hold is None:
            violations.append(f"{call.reservation_id}: never charged (lost)")
        elif (hold.status, hold.usage_input_tokens, hold.usage_output_tokens, hold.charged_tokens) != (
            "committed",
            call.input_tokens,
            call.output_tokens,
            expected,
        ):
            violations.append(f"{call.reservation_id}: {hold.status} {hold.charged_tokens}, not committed {expected}")
        elif hold.ledger != expected:
            violations.append(f"{call.reservation_id}: the ledger charged {hold.ledger}, not {expected} (doubled?)")
    return violations
