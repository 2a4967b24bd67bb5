"""`meter bench --history-reads`: do GetUsage and ListLedgerEntries cost the same for an account
with a million calls as for one with a thousand?

Two accounts on one real `meter serve`, with 1 000 and 1 000 000 committed calls spread over the
last 90 days (each a hold, a usage entry and its share of the daily totals, as Commit writes
them, the days before yesterday folded as the sweeper folds them). The same requests are sent
to both, alternating, one at a time over one gRPC channel; the figure is the median latency, and
the ratio big / small is the target (<= 2).

The 100th page is read with page_size 10, so that the small account has one (its last); the
page token is taken by walking the first 99 pages once, then the 100th page is requested again
and again with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

import grpc
from google.type import date_pb2

from meter.v1 import meter_pb2 as pb
from meter.v1 import meter_pb2_grpc
from meterlab.bench import seed
from meterlab.testbed import LabDatabase, ServerProcess

SMALL, BIG = 1_000, 1_000_000
TARGET = 2.0


@dataclass
class ReadsReport:
    calls: dict[str, int]
    samples: int
    # query -> account size -> median milliseconds
    medians: dict[str, dict[str, float]] = field(default_factory=dict)
    p90s: dict[str, dict[str, float]] = field(default_factory=dict)

    def ratios(self) -> dict[str, float]:
        return {query: round(m["big"] / m["small"], 3) for query, m in self.medians.items()}

    def table(self) -> str:
        small, big = self.calls["small"], self.calls["big"]
        header = f"{'query':<40} {f'{small:,} calls':>16} {f'{big:,} calls':>18} {'big/small':>10}"
        lines = [header, f"{'':<40} {'p50 (p90) ms':>16} {'p50 (p90) ms':>18} {f'(<= {TARGET:g})':>10}"]
        for query, m in self.medians.items():
            p = self.p90s[query]
            cells = [f"{m[size]:.2f} ({p[size]:.2f})" for size in ("small", "big")]
            lines.append(f"{query:<40} {cells[0]:>16} {cells[1]:>18} {self.ratios()[query]:>10.3f}")
        return "\n".join(lines)

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "history-reads.json"
        data = {"calls": self.calls, "samples": self.samples, "medians_ms": self.medians, "p90s_ms": self.p90s}
        path.write_text(json.dumps(data | {"ratios": self.ratios()}, indent=2))
        return path


async def history_reads(data_dir: Path, *, small: int = SMALL, big: int = BIG, samples: int = 300) -> ReadsReport:
    database = await LabDatabase.create("meter_bench_reads", data_dir)
    engine = database.engine
    server = ServerProcess(database.url)
    try:
        accounts = {}
        for size, count in (("small", small), ("big", big)):
            print(f"meter bench: loading {count:,} calls for the {size} account", flush=True)
            [accounts[size]] = await seed.funded_accounts(engine, f"bench-reads-{size}-", 1, buckets=16)
            await seed.calls(engine, accounts[size], count)
        await seed.folded(engine)
        await seed.settle_in(engine)
        await server.ready()
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = meter_pb2_grpc.MeterServiceStub(channel)
            report = ReadsReport({"small": small, "big": big}, samples)
            for query, make in (await _queries(stub, accounts)).items():
                times: dict[str, list[float]] = {"small": [], "big": []}
                for _ in range(samples):
                    for size in ("small", "big"):
                        times[size].append(await _timed(make(size)))
                report.medians[query] = {size: round(median(t), 3) for size, t in times.items()}
                report.p90s[query] = {size: round(sorted(t)[int(len(t) * 0.9)], 3) for size, t in times.items()}
        return report
    finally:
        server.stop()
        await database.close()


async def _timed(call: Awaitable[Any]) -> float:
    start = time.perf_counter()
    await call
    return (time.perf_counter() - start) * 1000


async def _queries(
    stub: meter_pb2_grpc.MeterServiceStub, accounts: dict[str, str]
) -> dict[str, Callable[[str], Awaitable[Any]]]:
    today = datetime.now(UTC).date()
    first, last = _date(today - timedelta(days=89)), _date(today)
    tokens = {size: await _page_token(stub, account, page=100, size=10) for size, account in accounts.items()}

    def usage(grouping: int, **labels: Any) -> Callable[[str], Awaitable[Any]]:
        return lambda size: stub.GetUsage(
            pb.GetUsageRequest(account_id=accounts[size], group_by=grouping, to=last, **{"from": first}, **labels)
        )

    return {
        "GetUsage by day, 90 days": usage(pb.USAGE_GROUPING_DAY),
        "GetUsage by model, 90 days": usage(pb.USAGE_GROUPING_MODEL),
        "GetUsage by team, 90 days": usage(pb.USAGE_GROUPING_LABELS, group_by_labels=["team"]),
        "GetUsage by day, team=team-1, 90 days": usage(pb.USAGE_GROUPING_DAY, label_filter={"team": "team-1"}),
        "ListLedgerEntries page 100 (size 10)": lambda size: stub.ListLedgerEntries(
            pb.ListLedgerEntriesRequest(account_id=accounts[size], page_size=10, page_token=tokens[size])
        ),
        "ListLedgerEntries page 1 (size 100)": lambda size: stub.ListLedgerEntries(
            pb.ListLedgerEntriesRequest(account_id=accounts[size], page_size=100)
        ),
    }


async def _page_token(stub: meter_pb2_grpc.MeterServiceStub, account: str, *, page: int, size: int) -> str:
    token = ""
    for _ in range(page - 1):
        answer = await stub.ListLedgerEntries(
            pb.ListLedgerEntriesRequest(account_id=account, page_size=size, page_token=token)
        )
        token = answer.next_page_token
        if not token:
            raise RuntimeError(f"{account} has fewer than {page} pages of {size}")
    return token


def _date(value: Any) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)
