"""src/meter/storage/schema.sql is the schema the migrations make: written by
scripts/generate_schema.py from a migrated database, and failing here when a migration changed
the schema without it (`make schema` writes it again)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def test_the_schema_file_is_what_the_migrations_make(database_url: str) -> None:
    """On a scratch database of its own, migrated for the check: the session's database also holds
    what other tests make in it (a lab's table, a scratch table)."""
    check = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "scripts" / "generate_schema.py"), "--database-url", database_url, "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_every_unique_key_of_an_accounts_table_carries_the_account() -> None:
    """Distributable by account (Citus needs the distribution column in every unique key). The
    tables that are not an account's say so here, with what they are keyed by."""
    not_an_accounts = {
        "caller_rate_counts",  # a caller's counts, per replica
        "meter_secrets",  # the service's own secrets
        "pack_payments",  # a payment is decided once, whatever account an event names
        "waiting_requests",  # Stripe events waiting for another, by what they wait for
        "webhook_endpoints",  # the operator's receivers
    }
    table = ""
    for line in (ROOT / "src" / "meter" / "storage" / "schema.sql").read_text(encoding="utf-8").splitlines():
        if line.startswith("CREATE TABLE "):
            table = line.split()[2]
        unique = "PRIMARY KEY (" in line or " UNIQUE (" in line or line.startswith("CREATE UNIQUE INDEX")
        if unique and table not in not_an_accounts:
            assert "account_id" in line.split("(", 1)[1], f"{table}: {line.strip()}"
