"""Figures of a benchmark run: per-scenario statistics, the target ratios, a table, JSON, PNG."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from meterlab.bench.load import Samples


@dataclass
class ScenarioResult:
    name: str
    loops_per_second: float
    rpcs_per_second: float
    latency_ms: dict[str, dict[str, float]]  # rpc -> {p50, p99, p99.9}
    errors: dict[str, int]
    meter_cpu_seconds_per_1000_loops: float
    postgres_cpu_seconds_per_1000_loops: float
    peak_rss_mb: float
    loops: int
    seconds: float
    offered_rate: float = 0.0


@dataclass
class Report:
    settings: dict[str, Any]
    scenarios: dict[str, ScenarioResult] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)  # the leak check's RSS figures, when run
    # Loops/s of many accounts, the hot account and the single bucket driven by pgbench, without
    # meter's server.
    database_alone: dict[str, float] = field(default_factory=dict)
    # Calls per Reserve and Commit statement in the many-accounts rounds (coalescing), when read.
    calls_per_statement: float | None = None

    def ratios(self) -> dict[str, float | None]:
        def loops(name: str) -> float | None:
            found = self.scenarios.get(name)
            return found.loops_per_second if found else None

        def div(a: float | None, b: float | None) -> float | None:
            return round(a / b, 3) if a is not None and b else None

        def p99(name: str, rpc: str) -> float | None:
            found = self.scenarios.get(name)
            return found.latency_ms.get(rpc, {}).get("p99") if found else None

        ceiling, many = self.scenarios.get("ceiling"), self.scenarios.get("many accounts")
        if self.memory:
            return {
                "6. RSS after all RPCs / after the first tenth (<= 1.1)": div(
                    self.memory.get("rss_mb_after_all"), self.memory.get("rss_mb_after_first_tenth")
                )
            }
        return {
            "1. hot / many accounts (>= 0.9)": div(loops("hot account"), loops("many accounts")),
            "2. hot / hot single bucket (>= 3)": div(loops("hot account"), loops("hot account, single bucket")),
            "2b. the same, database alone (pgbench)": div(
                self.database_alone.get("hot account"), self.database_alone.get("hot account, single bucket")
            ),
            "3. many-accounts RPCs/s / ceiling RPCs/s (>= 0.6)": div(
                many.rpcs_per_second if many else None, ceiling.rpcs_per_second if ceiling else None
            ),
            "3b. many accounts / floor, loops/s (>= 0.9)": div(loops("many accounts"), loops("floor")),
            "3c. many accounts / database alone, loops/s (>= 0.6)": div(
                loops("many accounts"), self.database_alone.get("many accounts")
            ),
            "3d. meter CPU per loop, many accounts / per ceiling RPC (<= 3)": div(
                many.meter_cpu_seconds_per_1000_loops if many else None,
                ceiling.meter_cpu_seconds_per_1000_loops if ceiling else None,
            ),
            "4. large history / many accounts (>= 0.9)": div(loops("large history"), loops("many accounts")),
            "5. Reserve p99 / ceiling p99 at half load (<= 3)": div(
                p99("half load", "Reserve"), p99("ceiling at half load", "Health.Check")
            ),
            "7. many accounts, limits on / off (>= 0.9)": div(
                loops("many accounts, limits on"), loops("many accounts")
            ),
            "8. hot account, limits on / off (>= 0.9)": div(loops("hot account, limits on"), loops("hot account")),
            "9. hot account, limits on / many accounts, limits on (>= 0.9)": div(
                loops("hot account, limits on"), loops("many accounts, limits on")
            ),
            "10. many accounts, labelled and every token class / plain (>= 0.9)": div(
                loops("many accounts, labelled"), loops("many accounts")
            ),
            "11. many accounts, labelled, under two budgets / plain (>= 0.9)": div(
                loops("many accounts, labelled, budgets"), loops("many accounts")
            ),
        }

    def table(self, targets: bool = True) -> str:
        """The scenarios' rows, then (with `targets`) the benchmark issue's ratios."""
        header = (
            f"{'scenario':<28}{'loops/s':>9}{'RPCs/s':>9}  {'main RPC p50/p99/p99.9 ms':<28}"
            f"{'CPU s/1k loops (meter+pg)':>27}{'RSS MB':>8}  errors"
        )
        lines = [header, "-" * len(header)]
        if self.memory:
            figures = ", ".join(f"{k} {int(v) if float(v).is_integer() else v}" for k, v in self.memory.items())
            lines = [f"leak check: {figures}"]
        for result in self.scenarios.values():
            rpc = main_rpc(result)
            p = result.latency_ms.get(rpc, {})
            latency = f"{rpc} {p.get('p50', 0):.1f}/{p.get('p99', 0):.1f}/{p.get('p99.9', 0):.1f}" if rpc else "-"
            cpu = f"{result.meter_cpu_seconds_per_1000_loops:.2f}+{result.postgres_cpu_seconds_per_1000_loops:.2f}"
            errors = ",".join(f"{k}:{v}" for k, v in result.errors.items()) or "0"
            lines.append(
                f"{result.name:<28}{result.loops_per_second:>9.0f}{result.rpcs_per_second:>9.0f}  {latency:<28}"
                f"{cpu:>27}{result.peak_rss_mb:>8.0f}  {errors}"
            )
        if self.database_alone:
            figures = ", ".join(f"{name} {rate:.0f}" for name, rate in self.database_alone.items())
            lines.append(f"database alone (pgbench, loops/s): {figures}")
        if self.calls_per_statement is not None:
            lines.append(
                f"calls per Reserve and Commit statement, many accounts (coalescing): {self.calls_per_statement:.2f}"
            )
        if targets:
            lines.append("")
            for name, value in self.ratios().items():
                lines.append(f"{name:<55} {value if value is not None else 'n/a'}")
        return "\n".join(lines)

    def write(self, out: Path) -> tuple[Path, Path | None]:
        out.mkdir(parents=True, exist_ok=True)
        data = {
            "settings": self.settings,
            "scenarios": {k: asdict(v) for k, v in self.scenarios.items()},
            "ratios": self.ratios(),
            "database_alone": self.database_alone,
            "calls_per_statement": self.calls_per_statement,
        }
        if self.memory:
            data["memory"] = self.memory
            json_path = out / "leak-check.json"
            json_path.write_text(json.dumps(data, indent=2))
            return json_path, None
        json_path = out / "bench.json"
        json_path.write_text(json.dumps(data, indent=2))
        return json_path, self._chart(out / "bench.png")

    def _chart(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = list(self.scenarios)
        fig, (throughput, latency) = plt.subplots(1, 2, figsize=(14, 5))
        throughput.barh(names, [self.scenarios[n].rpcs_per_second for n in names], color="#4c72b0")
        throughput.set_xlabel("RPCs per second")
        throughput.set_title("Throughput")
        throughput.invert_yaxis()
        p50 = [self.scenarios[n].latency_ms.get(main_rpc(self.scenarios[n]), {}).get("p50", 0) for n in names]
        p99 = [self.scenarios[n].latency_ms.get(main_rpc(self.scenarios[n]), {}).get("p99", 0) for n in names]
        rows = range(len(names))
        latency.barh([r - 0.2 for r in rows], p50, height=0.4, label="p50", color="#55a868")
        latency.barh([r + 0.2 for r in rows], p99, height=0.4, label="p99", color="#c44e52")
        latency.set_yticks(list(rows), names)
        latency.invert_yaxis()
        latency.set_xlabel("ms (Reserve; Health.Check for the ceiling)")
        latency.set_title("Latency")
        latency.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def main_rpc(result: ScenarioResult) -> str:
    """The RPC a scenario's latency is shown for: Reserve, else the ceiling's Health.Check."""
    for rpc in ("Reserve", "Health.Check"):
        if rpc in result.latency_ms:
            return rpc
    return next(iter(result.latency_ms), "")


def percentiles(values: Any) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": 0.0, "p99": 0.0, "p99.9": 0.0}

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000, 3)

    return {"p50": at(0.5), "p99": at(0.99), "p99.9": at(0.999)}


def merge(parts: list[Samples]) -> Samples:
    merged = Samples()
    for part in parts:
        merged.loops += part.loops
        merged.errors.update(part.errors)
        merged.elapsed = max(merged.elapsed, part.elapsed)
        for rpc, values in part.latencies.items():
            merged.latencies.setdefault(rpc, type(values)("d")).extend(values)
    return merged
