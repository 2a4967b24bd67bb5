"""The SQL that runs is the SQL in the files: every function in the database has its current text
in src/meter/storage/sql, and its installed body is that file's, to the character. Migrations
install frozen copies; this is what keeps the files from drifting from them."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

import meter.storage

SQL = Path(meter.storage.__file__).parent / "sql"


def _files() -> dict[str, str]:
    """Function name -> body (between the dollar quotes) of each file."""
    functions = {}
    for path in sorted(SQL.glob("*.sql")):
        source = path.read_text(encoding="utf-8")
        match = re.search(r"CREATE OR REPLACE FUNCTION (\w+)\(", source)
        assert match, f"{path.name} defines no function"
        assert path.stem == match.group(1), f"{path.name} defines {match.group(1)}: one function a file, named after it"
        functions[match.group(1)] = source[source.index("AS $$") + len("AS $$") : source.rindex("$$")]
    return functions


async def test_every_installed_function_is_its_file(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT p.proname, p.prosrc FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace "
                "WHERE n.nspname = current_schema()"
            )
        )
        installed = {name: body for name, body in rows}
    files = _files()
    assert sorted(installed) == sorted(files), "a function without a file, or a file the database does not run"
    for name, body in files.items():
        assert installed[name] == body, f"{name}: the database runs another text than storage/sql/{name}.sql"


def test_no_migration_imports_or_edits_another() -> None:
    """Each migration holds its statements in full: none assembles SQL from another's text."""
    migrations = Path(meter.storage.__file__).parent / "migrations" / "versions"
    for path in sorted(migrations.glob("0*.py")):
        source = path.read_text(encoding="utf-8")
        for sign in ("importlib", "migrations.versions", ".replace("):
            assert sign not in source, f"{path.name} uses {sign}"
