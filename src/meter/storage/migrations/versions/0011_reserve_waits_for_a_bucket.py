"""meter_reserve_fast waits for a balance row that has the tokens when every such row is locked.

Measured (`meter bench`, hot account, 64 callers on one account of 16 buckets, with a counter of
Reserves handed to the general path): a round in which almost no Reserve left the fast path ran
at 870 loops/s, like many accounts; rounds in which 15-55 % left it ran at 350-630. The fast path
skips locked rows; when every row that could take the hold was locked by a call settling, it
handed the Reserve to the general path, which locks all of the account's rows for several round
trips, so the next Reserves found every row locked too and followed it: the account slid into
the general path and stayed there for a while.

Now, when the skip-locked pick finds nothing, the Reserve reads (without locking) which row had
the tokens when last committed, takes the first in its own rotation order (spread as before), and
waits for that one row. After the wait the row is checked again (UPDATE's re-check of its WHERE):
if it no longer has the tokens, the general path decides, as before. Each Reserve waits for one
row at most, and for at most `p_wait_ms` (METER_RESERVE_WAIT_MS, 200 by default; 0: no wait, the
behaviour before): a longer wait means a queue the general path must sort out (an account nearly
empty, or a row held by a long transaction), so it is handed over then too.
No deadlock is possible: the Reserve holds no other lock while it waits.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25
"""

import importlib

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_0008 = importlib.import_module("meter.storage.migrations.versions.0008_rate_limits")
_0010 = importlib.import_module("meter.storage.migrations.versions.0010_reserve_reads_once")

_SKIP_LOCKED_PICK = """        WITH pick AS MATERIALIZED (
            SELECT b.bucket FROM buckets AS b
            WHERE b.account_id = p_account AND b.pool = v_pool AND b.available >= p_amount
            ORDER BY (b.bucket + v_account.bucket_count - v_first) % v_account.bucket_count
            LIMIT 1 FOR UPDATE SKIP LOCKED)
        UPDATE buckets AS b SET"""

_TAKEN = """        FROM pick WHERE b.account_id = p_account AND b.pool = v_pool AND b.bucket = pick.bucket
        RETURNING b.bucket INTO v_bucket;
"""


def _set_clause(function: str) -> str:
    """The SET list of the skip-locked UPDATE, so the waiting one moves exactly the same columns."""
    start = function.index(_SKIP_LOCKED_PICK) + len(_SKIP_LOCKED_PICK)
    return function[start : function.index(_TAKEN, start)]


_SET = _set_clause(_0010.RESERVE)

_WAIT = f"""        IF v_bucket IS NULL AND p_wait_ms > 0 THEN
            -- Every row with the tokens was locked: wait for one (the first in this call's rotation,
            -- as last committed) rather than hand over, which would lock them all for longer.
            SELECT b.bucket INTO v_wait FROM buckets AS b
            WHERE b.account_id = p_account AND b.pool = v_pool AND b.available >= p_amount
            ORDER BY (b.bucket + v_account.bucket_count - v_first) % v_account.bucket_count LIMIT 1;
            IF FOUND THEN
                v_lock_timeout := current_setting('lock_timeout');
                BEGIN
                    PERFORM set_config('lock_timeout', p_wait_ms || 'ms', true);
                    UPDATE buckets AS b SET{_SET}        WHERE b.account_id = p_account AND b.pool = v_pool
                        AND b.bucket = v_wait AND b.available >= p_amount
                    RETURNING b.bucket INTO v_bucket;
                EXCEPTION WHEN lock_not_available THEN
                    v_bucket := NULL;  -- a queue: the general path decides
                END;
                PERFORM set_config('lock_timeout', v_lock_timeout, true);
            END IF;
        END IF;
"""

RESERVE = _0008._edited(
    _0010.RESERVE,
    (
        ("CREATE OR REPLACE FUNCTION meter_reserve_fast(", "CREATE FUNCTION meter_reserve_fast("),
        (
            "    p_tokens_per_minute bigint[], p_concurrent_holds bigint[])",
            "    p_tokens_per_minute bigint[], p_concurrent_holds bigint[], p_wait_ms integer)",
        ),
        (
            "    v_checked boolean := false;\n",
            "    v_checked boolean := false;\n    v_wait smallint;\n    v_lock_timeout text;\n",
        ),
        (_TAKEN + "        EXIT WHEN", _TAKEN + _WAIT + "        EXIT WHEN"),
    ),
    "0010's meter_reserve_fast",
)


def upgrade() -> None:
    op.execute("DROP FUNCTION meter_reserve_fast")
    op.execute(RESERVE)


def downgrade() -> None:
    op.execute("DROP FUNCTION meter_reserve_fast")
    op.execute(_0010.RESERVE)
