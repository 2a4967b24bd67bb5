"""The service's Prometheus metrics, in prometheus_client's default registry (served at
/metrics by the operations work; readable in-process meanwhile)."""

from __future__ import annotations

from prometheus_client import Counter

BALANCE_WARNINGS = Counter(
    "meter_balance_warnings",
    "Accounts that crossed a balance warning level for the first time in their period.",
    ["level"],
)
