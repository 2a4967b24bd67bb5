"""`meter bench --operations`: what running meter as in production costs per call.

Three `meter serve` processes on one database: "plain" (no callers, logs at WARNING: no line per
RPC), "callers" (callers configured and a bearer token on every call, JSON logs at INFO with
METER_RPC_LOG=failures: no line for a call that succeeded) and "operated" (the same with one JSON
line per RPC, the default), the last two logging to files. All count the same Prometheus metrics
(they are always on). The same Reserve→Commit loops run against each, round after round, the
order reversed every other round, so the machine's noise falls on all alike; the report gives
medians and ratios to plain.
"""

from __future__ import annotations

from meter.domain.callers import hash_token, new_token
from meterlab.bench.compare import Configuration, compare
from meterlab.bench.report import Report
from meterlab.bench.runner import Options

CONFIGURATIONS = ("plain", "callers", "operated")


async def operations_overhead(options: Options) -> tuple[Report, int]:
    """The report (one scenario per configuration) and how many RPC log lines the operated
    server wrote (one per call, or the comparison is not what it claims)."""
    token = new_token()
    options.out.mkdir(parents=True, exist_ok=True)
    log_path = options.out / "operated.log"
    log_path.unlink(missing_ok=True)
    operated = {
        "METER_CALLERS": f'[[caller]]\nname = "bench"\nrole = "proxy"\ntoken_sha256 = "{hash_token(token)}"\n',
        "METER_LOG_LEVEL": "INFO",
        "METER_LOG_FORMAT": "json",
    }
    configurations = {
        "plain": Configuration(),
        "callers": Configuration(operated | {"METER_RPC_LOG": "failures"}, token, log_path=options.out / "callers.log"),
        "operated": Configuration(operated, token, log_path=log_path),
    }
    report = (await compare(options, "meter_bench_ops", configurations, "operations")).report
    with log_path.open() as log:
        lines = sum(1 for line in log if '"logger": "meter.rpc"' in line)
    return report, lines


def ratios(report: Report) -> str:
    """Each configuration / plain, per scenario, for throughput and meter's CPU per loop."""
    out = []
    for scenario in ("many accounts", "hot account"):
        plain = report.scenarios[f"{scenario}, plain"]
        for name in CONFIGURATIONS[1:]:
            other = report.scenarios[f"{scenario}, {name}"]
            throughput = other.loops_per_second / plain.loops_per_second
            cpu = other.meter_cpu_seconds_per_1000_loops / plain.meter_cpu_seconds_per_1000_loops
            out.append(f"{scenario}: {name}/plain loops/s {throughput:.3f}, meter CPU per loop {cpu:.3f}")
    return "\n".join(out)
