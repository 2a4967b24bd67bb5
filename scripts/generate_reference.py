"""Write docs/reference/{settings,errors,metrics}.md from the code that declares them: the settings
from meter.config.Settings, the errors from protos/meter/v1/error_reason.proto, the metrics from
the prometheus_client registry meter's modules fill; and schemas/{callers,catalog}.schema.json
(for editors) from meter.callers_config and meter.catalog. Nothing in them is copied by hand.

    python scripts/generate_reference.py           # write the files
    python scripts/generate_reference.py --check   # exit 1, naming them, when one is stale

tests/test_reference_docs.py runs the check.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from meter import metrics
from meter.callers_config import CallersFile
from meter.catalog import CatalogFile
from meter.client import fail_open, spool
from meter.config import VARIABLES, Settings

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"
ERROR_REASONS = ROOT / "protos" / "meter" / "v1" / "error_reason.proto"
GENERATED = "<!-- Written by scripts/generate_reference.py from {source}; do not edit by hand. -->\n\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(value: Any, unset: str) -> str:
    if value is None or value == ():
        return f"none: {unset}" if unset else "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return "`" + ",".join(f"{item:g}" if isinstance(item, float) else str(item) for item in value) + "`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def _bounds(info: Any) -> str:
    found = {type(item).__name__: item for item in info.metadata}
    low = found.get("Ge")
    high = found.get("Le")
    if low is None and high is None:
        return ""
    return f" ({getattr(low, 'ge', '')}–{getattr(high, 'le', '')})"


def settings() -> str:
    lines = [
        "# Settings",
        "",
        "Every setting is an environment variable; a malformed value stops `meter` at start with a",
        "message naming it. Bounds are inclusive.",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
    ]
    for field in fields(Settings):
        info = field.default  # the pydantic FieldInfo each setting is declared with
        extra = info.json_schema_extra or {}  # type: ignore[union-attr]
        default = _default(info.default, extra.get("unset", ""))  # type: ignore[union-attr]
        meaning = _cell(info.description or "") + _bounds(info)  # type: ignore[union-attr]
        lines.append(f"| `{VARIABLES[field.name]}` | {default} | {meaning} |")
    return GENERATED.format(source="meter.config.Settings") + "\n".join(lines) + "\n"


_CODE = re.compile(r"^([A-Z_]+): ?(.*)$", re.S)


def _reasons() -> Iterator[tuple[str, str, str]]:
    """(reason, gRPC code, when) for each ErrorReason value, from the comment above it."""
    comment: list[str] = []
    for raw in ERROR_REASONS.read_text().splitlines():
        line = raw.strip()
        if line.startswith("//"):
            comment.append(line.removeprefix("//").strip())
            continue
        value = re.match(r"ERROR_REASON_([A-Z_]+) = \d+;", line)
        if value and value.group(1) != "UNSPECIFIED":
            text = " ".join(comment)
            coded = _CODE.match(text)
            code, when = (coded.group(1), coded.group(2)) if coded else ("", text)
            yield value.group(1), code, when
        if not line.startswith("//"):
            comment = []


def errors() -> str:
    lines = [
        "# Errors",
        "",
        "Every error status carries one `google.rpc.ErrorInfo` with domain `meter`, one of these",
        "reasons and, where listed, metadata (keys in lowerCamelCase); a status that says when a retry",
        "can pass also carries `google.rpc.RetryInfo`. Branch on the reason, never on the message. A",
        "refused call changed nothing.",
        "",
        "| reason | code | when |",
        "|---|---|---|",
    ]
    lines += [f"| `{reason}` | {code} | {_cell(when)} |" for reason, code, when in _reasons()]
    return GENERATED.format(source="protos/meter/v1/error_reason.proto") + "\n".join(lines) + "\n"


def _exposed(metric: MetricWrapperBase) -> str:
    name: str = metric._name  # type: ignore[attr-defined]
    return f"{name}_total" if isinstance(metric, Counter) else name


def _kind(metric: MetricWrapperBase) -> str:
    return {Counter: "counter", Gauge: "gauge", Histogram: "histogram"}.get(type(metric), type(metric).__name__)


def _metrics_of(module: Any) -> Iterator[tuple[str, str, str, str]]:
    for value in vars(module).values():
        if isinstance(value, MetricWrapperBase) and not getattr(value, "_labelvalues", ()):
            labels = ", ".join(value._labelnames)  # type: ignore[attr-defined]
            yield _exposed(value), _kind(value), labels, value._documentation  # type: ignore[attr-defined]


def metrics_table() -> str:
    served = sorted(_metrics_of(metrics))
    for family in metrics.DATABASE_POOLS.collect():
        served.append((family.name, family.type, ", ".join(getattr(family, "_labelnames", ())), family.documentation))
    client = sorted([*_metrics_of(fail_open), *_metrics_of(spool)])
    lines = [
        "# Metrics",
        "",
        "`GET /metrics` on `METER_HTTP_ADDR`, Prometheus text format; each replica counts what it did",
        "(sum them in Prometheus). Histograms also expose `_bucket`, `_sum` and `_count`.",
        "",
        "| metric | type | labels | meaning |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{name}` | {kind} | {labels} | {_cell(help)} |" for name, kind, labels, help in sorted(served)]
    lines += [
        "",
        "## In the client",
        "",
        "`meter.client` registers these in the proxy's own process (prometheus_client's default",
        "registry): what the proxy did while meter was away.",
        "",
        "| metric | type | labels | meaning |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{name}` | {kind} | {labels} | {_cell(help)} |" for name, kind, labels, help in client]
    return GENERATED.format(source="the prometheus_client registry of meter.metrics") + "\n".join(lines) + "\n"


def schema(model: Any) -> str:
    return (
        json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema", **model.model_json_schema()}, indent=2)
        + "\n"
    )


def pages() -> dict[Path, str]:
    return {
        REFERENCE / "settings.md": settings(),
        REFERENCE / "errors.md": errors(),
        REFERENCE / "metrics.md": metrics_table(),
        ROOT / "schemas" / "callers.schema.json": schema(CallersFile),
        ROOT / "schemas" / "catalog.schema.json": schema(CatalogFile),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when a file differs from what it would be")
    args = parser.parse_args()
    stale = [path for path, text in pages().items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale: run python scripts/generate_reference.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in pages().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
