"""What the bench reads from a server's /metrics around a round: the Reserves taken from all of an
account's rows, and how many calls each Reserve and Commit statement carried (coalescing)."""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from meterlab.testbed import ServerProcess


@dataclass(frozen=True)
class Counts:
    """What a server's /metrics said at one moment (the sums of all labels)."""

    across_rows: float = 0.0  # meter_reserves_across_rows_total
    calls: float = 0.0  # meter_coalesced_calls_sum: calls sent, Reserves and Commits
    statements: float = 0.0  # meter_coalesced_calls_count: statements that carried them

    def calls_per_statement_since(self, before: Counts) -> float:
        statements = self.statements - before.statements
        return (self.calls - before.calls) / statements if statements else 1.0


async def scrape(server: ServerProcess) -> Counts:
    """The server's /metrics, now."""

    def read() -> str:
        with urllib.request.urlopen(f"http://{server.http_address}/metrics", timeout=10) as response:
            return str(response.read().decode())

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(await asyncio.to_thread(read)):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + float(sample.value)
    return Counts(
        values.get("meter_reserves_across_rows_total", 0.0),
        values.get("meter_coalesced_calls_sum", 0.0),
        values.get("meter_coalesced_calls_count", 0.0),
    )
