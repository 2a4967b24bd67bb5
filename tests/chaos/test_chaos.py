"""The bounded chaos run (`meter chaos` in under two minutes): every fault scenario, the checker
after each (grants among the operations, half of them expiring within seconds while holds on them
are open), no violation allowed (webhooks too: delivered in order within a bounded delay beside a
tarpit and redirecting endpoints, none of whose deliveries counts as delivered)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meterlab.chaos.runner import CLOCK_JUMP, NO_FAULT, SCENARIOS, Options, chaos

# Long: run by `make test-long`, CI's own step, not by `make test`.
pytestmark = pytest.mark.long

FAULTS = set(SCENARIOS) - {NO_FAULT}


async def test_no_fault_loses_or_double_counts_a_token(tmp_path: Path) -> None:
    options = Options(
        seconds=11.0,
        clients=8,
        seed=7,
        data_dir=tmp_path / "pg",
        database_url=os.environ.get("METER_TEST_DATABASE_URL"),
    )
    lines: list[str] = []
    report = await chaos(options, progress=lines.append)

    assert report.clean, report.render()
    assert report.unanswered == []
    ran = [s for s in report.scenarios if not s.skipped]
    assert [s.name for s in report.scenarios] == list(SCENARIOS)
    for scenario in ran:
        assert scenario.acked > 50, scenario
        assert scenario.checks > 1000, scenario
        if scenario.name in FAULTS:
            assert scenario.faults == 1 and scenario.recovery_seconds is not None, scenario
        if scenario.name != CLOCK_JUMP:  # its events are made on the moved clock
            assert scenario.webhook_delays is not None and scenario.webhook_delays.events > 0, scenario
    assert report.hostile_endpoints.endswith(", 0 requests reached their target"), report.hostile_endpoints
    stripe_flows = ("dispute", "subscription", "invoice", "invoice_payment", "sub_refund")
    kinds = ("reserve", "commit", "release", "extend", "balance", "adjust", "grant", "revoke", "purchase", "refund")
    for kind in (*kinds, *stripe_flows):
        assert report.operations[kind]["acked"] > 0, (kind, report.operations)
    # Late and repeated calls were refused for the right reasons, not just acknowledged.
    assert report.operations["commit"]["refused"] + report.operations["release"]["refused"] > 0
    assert len(lines) == len(SCENARIOS)
