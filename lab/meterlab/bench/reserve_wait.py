"""`meter bench --reserve-wait`: what waiting for a locked balance row changes.

Two `meter serve` processes on one database: "no wait" (METER_RESERVE_WAIT_MS=0: a Reserve that
finds every row that has its tokens locked by a call settling takes them from all of the
account's rows, locking them all) and "wait" (the default). The hot account is where it shows;
many accounts, where rows are rarely locked, is the control. The report adds each scenario's
share of Reserves taken from all the rows.
"""

from __future__ import annotations

from statistics import median

from meterlab.bench.compare import Comparison, Configuration, compare
from meterlab.bench.runner import Options

CONFIGURATIONS = {"no wait": Configuration({"METER_RESERVE_WAIT_MS": "0"}), "wait": Configuration()}


async def reserve_wait(options: Options) -> Comparison:
    return await compare(options, "meter_bench_wait", CONFIGURATIONS, "reserve-wait")


def ratios(comparison: Comparison) -> str:
    """hot / many accounts for each configuration, then the hot account with / without the wait,
    and the median share of Reserves taken from all the account's rows per scenario."""
    scenarios = comparison.report.scenarios

    def loops(label: str) -> float:
        return scenarios[label].loops_per_second

    out = [
        f"{name}: hot / many accounts {loops(f'hot account, {name}') / loops(f'many accounts, {name}'):.3f}"
        for name in CONFIGURATIONS
    ]
    out.append(f"hot account, wait / no wait {loops('hot account, wait') / loops('hot account, no wait'):.3f}")
    for label, shares in comparison.across_rows.items():
        out.append(f"{label}: {median(shares):.1%} of Reserves taken from all rows (median round)")
    return "\n".join(out)
