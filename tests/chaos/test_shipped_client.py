"""The shipped MeterClient through SIGKILL and restart of meter, a database fault and meter down
for 10 s (with a proxy restarted meanwhile on a spool holding another version's rows, one proxy
on a spool full from the start, and one failing open): every call a proxy was answered or let
through for is charged exactly once, with the usage it reported."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meterlab.chaos.shipped_client import Options, client_outages

# Long: run by `make test-long`, CI's own step, not by `make test`.
pytestmark = pytest.mark.long


async def test_no_commit_is_lost_or_doubled_through_outages(tmp_path: Path) -> None:
    options = Options(
        seconds_between_faults=4.0, data_dir=tmp_path / "pg", database_url=os.environ.get("METER_TEST_DATABASE_URL")
    )
    report = await client_outages(options)
    assert report.violations == [], report.render()
    assert len(report.faults) == 3, report.faults
    assert report.calls > 100, report.render()
    assert report.counts["spooled"] > 0 and report.counts["let through"] > 0, report.render()
    assert report.counts["reserve refused UNAVAILABLE"] > 0, report.render()  # failing closed meanwhile
    assert report.counts["sent without the spool"] > 0 and report.counts["set aside"] == 2, report.render()
