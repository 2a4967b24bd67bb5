"""Every ledger entry names the caller whose call wrote it.

ledger_entries.caller: the configured caller's name (`anonymous` when meter runs with no callers
on loopback, `meter` for what the sweeper does by itself). Entries written before this migration
say `unrecorded`. The column has no default after this migration, so a write that forgets to
name its caller fails instead of recording a wrong one. Adding it with a constant default
rewrites nothing (PostgreSQL keeps the default in the catalog), and the append-only trigger does
not fire.

meter_commit_fast, the one statement that writes usage entries on the fast path, is replaced by
the same function with the caller as its last argument.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

import importlib

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_PREVIOUS = importlib.import_module("meter.storage.migrations.versions.0006_usage").COMMIT


def _with_caller(function: str) -> str:
    """0006's meter_commit_fast, taking and recording the caller (0006 is frozen, so this stays
    the same function it was when this migration was written)."""
    edits = (
        ("p_clock_offset double precision)", "p_clock_offset double precision, p_caller text)"),
        (
            "INSERT INTO ledger_entries (account_id, created_at, kind, pool, amount, reservation_id)\n"
            "    SELECT p_account, v_now, 'usage', v.pool, v.amount, v_reservation\n",
            "INSERT INTO ledger_entries (account_id, created_at, kind, pool, amount, reservation_id, caller)\n"
            "    SELECT p_account, v_now, 'usage', v.pool, v.amount, v_reservation, p_caller\n",
        ),
    )
    for old, new in edits:
        assert function.count(old) == 1, f"0006's meter_commit_fast changed: {old!r}"
        function = function.replace(old, new)
    return function


COMMIT = _with_caller(_PREVIOUS)


def upgrade() -> None:
    op.execute("ALTER TABLE ledger_entries ADD COLUMN caller text NOT NULL DEFAULT 'unrecorded'")
    op.execute("ALTER TABLE ledger_entries ALTER COLUMN caller DROP DEFAULT")
    op.execute("DROP FUNCTION meter_commit_fast")
    op.execute(COMMIT)


def downgrade() -> None:
    op.execute("DROP FUNCTION meter_commit_fast")
    op.execute(_PREVIOUS)
    op.execute("ALTER TABLE ledger_entries DROP COLUMN caller")
