"""docs/reference/ is what the code declares: the settings, the error reasons and the metrics
tables are written by scripts/generate_reference.py, and fail here when a setting, a reason or a
metric changed without them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_reference_tables_are_what_the_code_declares() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_reference.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_every_setting_reason_and_metric_is_in_its_table() -> None:
    from meter.config import VARIABLES

    settings = (ROOT / "docs" / "reference" / "settings.md").read_text()
    assert all(f"`{variable}`" in settings for variable in VARIABLES.values())
    errors = (ROOT / "docs" / "reference" / "errors.md").read_text()
    assert "`INSUFFICIENT_TOKENS` | FAILED_PRECONDITION" in errors and "`RATE_LIMITED` | RESOURCE_EXHAUSTED" in errors
    metrics = (ROOT / "docs" / "reference" / "metrics.md").read_text()
    assert "`meter_rpcs_total` | counter | method, code" in metrics
