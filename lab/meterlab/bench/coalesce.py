"""`meter bench --coalesce`: one statement per call against coalesced statements, side by side.

Servers on one database that differ only in METER_COALESCE: "alone" (0: a statement per Reserve
and per Commit) and "coalesce N" (at most N of each in flight, the calls arriving meanwhile going
together as one statement of meter_reserve_many / meter_commit_many). The report adds, per scenario,
how many calls each statement carried (the median round's mean).
"""

from __future__ import annotations

from statistics import median

from meterlab.bench.compare import Comparison, Configuration, compare
from meterlab.bench.runner import Options

IN_FLIGHT = (1, 4)


def configurations() -> dict[str, Configuration]:
    return {"alone": Configuration({"METER_COALESCE": "0"})} | {
        f"coalesce {n}": Configuration({"METER_COALESCE": str(n)}) for n in IN_FLIGHT
    }


async def coalesce(options: Options) -> Comparison:
    return await compare(options, "meter_bench_coalesce", configurations(), "coalesce")


def ratios(comparison: Comparison) -> str:
    """Each coalescing configuration / alone, per scenario, for loops per second and for meter's
    and PostgreSQL's CPU per loop; then the calls per statement."""
    scenarios = comparison.report.scenarios
    out = []
    for scenario in ("many accounts", "hot account"):
        alone = scenarios[f"{scenario}, alone"]
        for name in configurations():
            if name == "alone":
                continue
            this = scenarios[f"{scenario}, {name}"]
            out.append(
                f"{scenario}, {name} / alone: loops/s {this.loops_per_second / alone.loops_per_second:.3f}, "
                f"meter CPU/loop {this.meter_cpu_seconds_per_1000_loops / alone.meter_cpu_seconds_per_1000_loops:.3f}, "
                f"PostgreSQL CPU/loop "
                f"{this.postgres_cpu_seconds_per_1000_loops / alone.postgres_cpu_seconds_per_1000_loops:.3f}"
            )
    for label, sizes in comparison.calls_per_statement.items():
        out.append(f"{label}: {median(sizes):.2f} calls per statement (median round)")
    return "\n".join(out)
