"""The SQL that runs is the SQL in the files: every function in the database has its current text
in src/meter/storage/sql, and its installed body is that file's, to the character. Migrations
hold no copies of them: `meter migrate` installs the files (meter.storage.functions)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

import meter.storage
from meter.storage.functions import install, sql_functions, stale_functions

MIGRATIONS = Path(meter.storage.__file__).parent / "migrations" / "versions"


async def test_every_installed_function_is_its_file(engine: AsyncEngine) -> None:
    assert len(sql_functions()) > 30
    assert await stale_functions(engine) == []


async def test_install_replaces_changed_texts_and_signatures_and_drops_what_no_file_defines(
    engine: AsyncEngine,
) -> None:
    """Rolled back at the end: the session's database keeps the files' functions."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            # An older text; another signature beside the file's; the file's gone, another in its place.
            await connection.execute(
                text(
                    "CREATE OR REPLACE FUNCTION ledger_entries_append_only() RETURNS trigger "
                    "LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'"
                )
            )
            await connection.execute(text("CREATE FUNCTION meter_emit(p text) RETURNS int LANGUAGE sql AS 'SELECT 1'"))
            await connection.execute(text("DROP FUNCTION meter_pay_debt"))
            await connection.execute(text("CREATE FUNCTION meter_pay_debt() RETURNS int LANGUAGE sql AS 'SELECT 3'"))
            await connection.execute(text("CREATE FUNCTION meter_gone() RETURNS int LANGUAGE sql AS 'SELECT 2'"))
            changed = await connection.run_sync(install)
            assert sorted(changed) == ["ledger_entries_append_only", "meter_emit", "meter_gone", "meter_pay_debt"]
            assert await connection.run_sync(install) == []
            counts = await connection.execute(
                text(
                    "SELECT proname, count(*) FROM pg_proc "
                    "WHERE proname IN ('meter_emit', 'meter_pay_debt', 'meter_gone') GROUP BY proname"
                )
            )
            assert sorted(counts) == [("meter_emit", 1), ("meter_pay_debt", 1)]
        finally:
            await transaction.rollback()
    assert await stale_functions(engine) == []


def test_migrations_are_forward_only_and_hold_no_function() -> None:
    """Each migration holds its statements in full (none assembles SQL from another's text), and
    none copies a function: the files are the one home of the functions' text."""
    for path in sorted(MIGRATIONS.glob("0*.py")):
        source = path.read_text(encoding="utf-8")
        for sign in ("importlib", "migrations.versions", ".replace("):
            assert sign not in source, f"{path.name} uses {sign}"
        functions = source.count("CREATE OR REPLACE FUNCTION")
        assert functions == (1 if path.name == "0001_baseline.py" else 0), f"{path.name} copies a function"
        assert "forward-only" in source, f"{path.name}: a migration has no downgrade; say so"
