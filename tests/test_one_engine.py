"""One engine moves tokens: no Python file of the service writes the ledger, the bucket rows, the
holds or an account's money (its debt, its allowance month and what the month was granted). Every
such change is a function of src/meter/storage/sql; Python decides amounts and calls them. This
reads every SQL text the package's Python holds (string constants, implicit concatenations
joined) and fails on one that writes those; tests/integration/test_service_role.py shows the
database refusing the same writes to the role meter serves with."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import meter

PACKAGE = Path(meter.__file__).parent
MIGRATIONS = PACKAGE / "storage" / "migrations"

# Tables only the SQL functions write.
ENGINE_TABLES = ("ledger_entries", "buckets", "holds", "budget_buckets", "balance_events", "usage_daily")
# The columns of accounts only the SQL functions write.
MONEY_COLUMNS = ("debt", "allowance_total", "period_start", "period_end", "granted_period_start", "debt_announced")

_WRITES_ENGINE_TABLE = re.compile(
    rf"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE)\s+({'|'.join(ENGINE_TABLES)})\b", re.IGNORECASE
)
_WRITES_ACCOUNTS = re.compile(r"\b(INSERT\s+INTO|DELETE\s+FROM|TRUNCATE)\s+accounts\b", re.IGNORECASE)
_UPDATES_ACCOUNTS = re.compile(r"\bUPDATE\s+accounts\b(?P<rest>.*?)(\bWHERE\b|$)", re.IGNORECASE | re.DOTALL)
_SETS_MONEY = re.compile(rf"(?<![\w.])(?:\w+\.)?({'|'.join(MONEY_COLUMNS)})\s*=(?!=)", re.IGNORECASE)


def _sql_texts(path: Path) -> list[tuple[int, str]]:
    """Every string constant, an f-string's literal parts joined (its values as "?")."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts_of_fstrings = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts_of_fstrings:
            texts.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):
            parts = [v.value if isinstance(v, ast.Constant) else "?" for v in node.values]
            texts.append((node.lineno, "".join(str(part) for part in parts)))
    return texts


def violations(path: Path) -> list[str]:
    found = []
    for line, sql in _sql_texts(path):
        if match := _WRITES_ENGINE_TABLE.search(sql) or _WRITES_ACCOUNTS.search(sql):
            found.append(f"{path.name}:{line}: {match.group(0)}")
        for update in _UPDATES_ACCOUNTS.finditer(sql):
            if money := _SETS_MONEY.search(update.group("rest")):
                found.append(f"{path.name}:{line}: UPDATE accounts sets {money.group(1)}")
    return found


def test_no_python_file_of_the_service_writes_what_the_sql_functions_move() -> None:
    files = [p for p in PACKAGE.rglob("*.py") if MIGRATIONS not in p.parents]
    assert len(files) > 100
    assert [v for path in files for v in violations(path)] == []


def test_the_check_finds_such_writes(tmp_path: Path) -> None:
    """Not vacuous: each kind of forbidden write is found, and what is allowed is not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "A = 'INSERT INTO ledger_entries (account_id) VALUES (1)'\n"
        "B = ('UPDATE buckets '\n     'SET available = 0')\n"
        "C = 'UPDATE accounts SET plan_id = :p, debt = :d WHERE account_id = :a'\n"
        'D = f"UPDATE accounts AS a SET a.allowance_total = {1} WHERE true"\n'
        "E = 'UPDATE accounts SET warned_levels = 1, warned_period_start = :s WHERE account_id = :a'\n"
        "F = 'SELECT debt = 0 FROM accounts'\n",
        encoding="utf-8",
    )
    found = violations(sample)
    assert len(found) == 4, found
    assert [f.split(": ", 1)[1] for f in found] == [
        "INSERT INTO ledger_entries",
        "UPDATE buckets",
        "UPDATE accounts sets debt",
        "UPDATE accounts sets allowance_total",
    ]
