"""The chaos run's report: what ran, what was injected, what was checked, what was found."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Delays:
    """Seconds from an event's making to its first 2xx at the healthy endpoint, over a scenario."""

    events: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, delays: list[float]) -> Delays | None:
        if not delays:
            return None
        ordered = sorted(delays)

        def at(share: float) -> float:
            return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

        return cls(len(ordered), at(0.5), at(0.99), ordered[-1])


@dataclass
class ScenarioReport:
    name: str
    ops_before: int = 0
    ops: int = 0
    acked: int = 0
    faults: int = 0
    recovery_seconds: float | None = None  # from the fault until a Reserve was answered again
    checks: int = 0
    violations: list[str] = field(default_factory=list)
    skipped: str = ""
    webhook_delays: Delays | None = None  # at the healthy endpoint (None: not measured)

    def line(self) -> str:
        if self.skipped:
            return f"{self.name:<44} skipped: {self.skipped}"
        recovery = f"{self.recovery_seconds:6.2f}" if self.recovery_seconds is not None else "     -"
        return (
            f"{self.name:<44} {self.ops:>7} {self.acked:>7} {self.faults:>6} {recovery:>10} "
            f"{self.checks:>8} {len(self.violations):>10}"
        )

    def webhook_line(self) -> str:
        d = self.webhook_delays
        figures = (
            f"{d.events:>7} {d.p50:>8.2f} {d.p99:>8.2f} {d.max:>8.2f}" if d else f"{'-':>7} {'-':>8} {'-':>8} {'-':>8}"
        )
        return f"{self.name:<44} {figures}"


WEBHOOK_HEADER = f"{'webhooks to the healthy endpoint, delay s':<44} {'events':>7} {'p50':>8} {'p99':>8} {'max':>8}"
HEADER = f"{'scenario':<44} {'ops':>7} {'acked':>7} {'faults':>6} {'serving s':>10} {'checks':>8} {'violations':>10}"


@dataclass
class ChaosReport:
    seconds_per_scenario: float
    clients: int
    seconds: float = 0.0
    scenarios: list[ScenarioReport] = field(default_factory=list)
    operations: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> outcome -> count
    hostile_endpoints: str = ""  # what the tarpit and the redirecting endpoints were sent
    bugs: list[str] = field(default_factory=list)  # INTERNAL/UNKNOWN/5xx answers, workload crashes
    unanswered: list[str] = field(default_factory=list)  # operations no retry got an answer to

    @property
    def violations(self) -> list[str]:
        """Invariants broken, bugs answered, and operations the service never answered again
        (for 90 s of retries: it did not recover on its own)."""
        unanswered = [f"unanswered: {u}" for u in self.unanswered]
        return [v for s in self.scenarios for v in s.violations] + self.bugs + unanswered

    @property
    def clean(self) -> bool:
        return not self.violations

    def render(self) -> str:
        lines = [HEADER, "-" * len(HEADER), *(s.line() for s in self.scenarios), ""]
        lines += [
            WEBHOOK_HEADER,
            "-" * len(WEBHOOK_HEADER),
            *(s.webhook_line() for s in self.scenarios if not s.skipped),
        ]
        lines += [self.hostile_endpoints or "no tarpit or redirecting endpoint in this run", ""]
        lines.append(f"{'operation':<16} {'acked':>8} {'refused':>8} {'unknown':>8}")
        for kind, row in sorted(self.operations.items()):
            lines.append(f"{kind:<16} {row['acked']:>8} {row['refused']:>8} {row['unknown']:>8}")
        total = sum(sum(row.values()) for row in self.operations.values())
        acked = sum(row["acked"] for row in self.operations.values())
        lines += [
            "",
            f"{total} operations ({acked} acknowledged) from {self.clients} clients in {self.seconds:.0f} s; "
            f"{sum(s.faults for s in self.scenarios)} faults; {sum(s.checks for s in self.scenarios)} checks; "
            f"{len(self.violations)} violations",
        ]
        lines += [f"VIOLATION {v}" for v in self.violations[:50]]
        return "\n".join(lines)

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "chaos.json"
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path
