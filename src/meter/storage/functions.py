"""The SQL functions, one a file in storage/sql/: the text that runs is the text in the file.

Migrations change tables; functions are not copied into them. `meter migrate` installs every
file's function after the migrations, in their transaction and under their lock (see
migrations/env.py), replacing the ones whose text changed and dropping the ones no file defines.
A server refuses to become ready while the database runs other texts than its files, as it does
for a migration it has not seen (bootstrap), so code and functions never disagree.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

SQL = Path(__file__).parent / "sql"

_DEFINES = re.compile(r"CREATE OR REPLACE FUNCTION (\w+)\(")
_BODY_START = "AS $$"
_BODY_END = "$$"

# The schema's own functions: those of extensions are not ours to replace or drop.
_INSTALLED = text(
    "SELECT p.proname, coalesce(obj_description(p.oid, 'pg_proc'), '') || E'\\n' || p.prosrc, "
    "p.oid::regprocedure::text AS signature FROM pg_proc AS p "
    "JOIN pg_namespace AS n ON n.oid = p.pronamespace WHERE n.nspname = current_schema() "
    "AND NOT EXISTS (SELECT FROM pg_depend AS d WHERE d.objid = p.oid AND d.deptype = 'e')"
)

_OVERLOADED = text(
    "SELECT p.proname, count(*) FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace "
    "WHERE n.nspname = current_schema() GROUP BY p.proname HAVING count(*) > 1"
)


@dataclass(frozen=True)
class SqlFunction:
    name: str
    source: str  # the file, a CREATE OR REPLACE FUNCTION statement
    body: str  # between the dollar quotes: what pg_proc.prosrc holds once installed

    @property
    def digest(self) -> str:
        """The whole file's, kept as the installed function's comment: a change outside the body
        (its arguments, SECURITY DEFINER, its settings) is a change too."""
        return "sha256:" + hashlib.sha256(self.source.encode()).hexdigest()

    @property
    def installed_text(self) -> str:
        """What _INSTALLED reads back once it is installed: the digest, a newline, the body."""
        return self.digest + "\n" + self.body


def sql_functions() -> list[SqlFunction]:
    """Every file's function; a file defines one function, named after it."""
    functions = []
    for path in sorted(SQL.glob("*.sql")):
        source = path.read_text(encoding="utf-8")
        match = _DEFINES.search(source)
        if match is None or match.group(1) != path.stem:
            raise ValueError(f"{path.name}: one function a file, named after it")
        body = source[source.index(_BODY_START) + len(_BODY_START) : source.rindex(_BODY_END)]
        functions.append(SqlFunction(path.stem, source, body))
    if not functions:  # an install without its package data would drop every function
        raise FileNotFoundError(f"no SQL function files in {SQL}")
    return functions


def install(connection: Connection) -> list[str]:
    """Make the database's functions the files' ones; the names of those (re)installed or dropped.

    A changed function is dropped and created, so that a file that changed its arguments leaves
    no overload behind; one that something depends on (the ledger's trigger) is replaced in place,
    which PostgreSQL allows while its signature stays."""
    installed: dict[str, list[tuple[str, str]]] = {}
    for name, body, signature in connection.execute(_INSTALLED):
        installed.setdefault(name, []).append((body, signature))
    files = sql_functions()
    changed = []
    # Bodies are checked when called, not now: a file may call one installed after it.
    connection.execute(text("SET LOCAL check_function_bodies = off"))
    for function in files:
        versions = installed.get(function.name, [])
        if [text_ for text_, _ in versions] == [function.installed_text]:
            continue
        changed.append(function.name)
        if not _recreated(connection, function, [signature for _, signature in versions]):
            connection.exec_driver_sql(function.source)
        connection.exec_driver_sql(f"COMMENT ON FUNCTION {function.name} IS '{function.digest}'")  # hex: no quote
    for name in sorted(set(installed) - {function.name for function in files}):
        for _, signature in installed[name]:
            connection.exec_driver_sql(f"DROP FUNCTION {signature}")
        changed.append(name)
    overloaded = [name for name, count in connection.execute(_OVERLOADED)]
    if overloaded:
        raise RuntimeError(f"functions defined twice after installing the files: {overloaded}")
    return changed


def _recreated(connection: Connection, function: SqlFunction, signatures: list[str]) -> bool:
    """Drop every installed version and create the file's; False when a dependent object refuses
    the drop (nothing changed then)."""
    savepoint = connection.begin_nested()
    try:
        for signature in signatures:
            connection.exec_driver_sql(f"DROP FUNCTION {signature}")
        connection.exec_driver_sql(function.source)
    except DBAPIError:
        savepoint.rollback()
        return False
    savepoint.commit()
    return True


async def stale_functions(engine: AsyncEngine) -> list[str]:
    """The functions whose installed text is not this code's file (or that no file defines)."""
    installed: dict[str, list[str]] = {}
    async with engine.connect() as connection:
        for name, body, _ in await connection.execute(_INSTALLED):
            installed.setdefault(name, []).append(body)
    files = {function.name: [function.installed_text] for function in sql_functions()}
    return sorted(name for name in set(installed) | set(files) if installed.get(name) != files.get(name))
