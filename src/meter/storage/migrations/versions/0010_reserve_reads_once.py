"""meter_reserve_fast reads an account's rows once when it has limits, and says it checked them.

Measured after 0008 (`meter bench`, hot account): with limits on, each Reserve read the
account's rows twice (the counts before the hold, the balance after it) and a Reserve handed to
the general path had its limits read and checked again there; the hot account lost about a
tenth of its throughput to that (0.898 of the same account without limits). Now the one read
before the hold also takes the balance sums, the balance returned is those sums with this
Reserve's own change, and the outcome says whether the limits were checked and passed
('checked'), so the general path does not check them again (it still does after 'slow', when the
function gave up before checking, and after 'limited', to refuse with the limit and a delay).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

import importlib

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_0008 = importlib.import_module("meter.storage.migrations.versions.0008_rate_limits")

_FINAL_SUMS = """    SELECT coalesce(sum(b.available) FILTER (WHERE b.pool = 'allowance'), 0),
           coalesce(sum(b.available) FILTER (WHERE b.pool = 'purchased'), 0),
           coalesce(sum(b.held) FILTER (WHERE b.pool = 'allowance'), 0),
           coalesce(sum(b.held) FILTER (WHERE b.pool = 'purchased'), 0),
           coalesce(sum(b.used), 0)
    INTO allowance_remaining, purchased_remaining, allowance_held, purchased_held, used
    FROM buckets AS b WHERE b.account_id = p_account;
"""

# When the limits were read, the balance comes from that same read.
_CHECKED_SUMS = """    IF v_checked THEN
        -- The sums read before the hold (no second read), with this Reserve's own change.
        allowance_remaining := v_allowance_available
            - CASE WHEN v_pool = 'allowance' THEN p_amount ELSE 0 END;
        purchased_remaining := v_purchased_available
            - CASE WHEN v_pool = 'purchased' THEN p_amount ELSE 0 END;
        allowance_held := v_allowance_held + CASE WHEN v_pool = 'allowance' THEN p_amount ELSE 0 END;
        purchased_held := v_purchased_held + CASE WHEN v_pool = 'purchased' THEN p_amount ELSE 0 END;
        used := v_used;
"""


def _indented(block: str) -> str:
    return "".join("    " + line for line in block.splitlines(keepends=True))


RESERVE = _0008._edited(
    _0008.RESERVE,
    (
        ("CREATE FUNCTION meter_reserve_fast(", "CREATE OR REPLACE FUNCTION meter_reserve_fast("),
        (
            "    v_open bigint;\n",
            "    v_open bigint;\n"
            "    v_checked boolean := false;\n"
            "    v_allowance_available bigint;\n"
            "    v_purchased_available bigint;\n"
            "    v_allowance_held bigint;\n"
            "    v_purchased_held bigint;\n"
            "    v_used bigint;\n",
        ),
        (
            "               coalesce(sum(b.open_holds), 0)\n        INTO v_requests, v_tokens, v_open\n",
            "               coalesce(sum(b.open_holds), 0),\n"
            "               coalesce(sum(b.available) FILTER (WHERE b.pool = 'allowance'), 0),\n"
            "               coalesce(sum(b.available) FILTER (WHERE b.pool = 'purchased'), 0),\n"
            "               coalesce(sum(b.held) FILTER (WHERE b.pool = 'allowance'), 0),\n"
            "               coalesce(sum(b.held) FILTER (WHERE b.pool = 'purchased'), 0),\n"
            "               coalesce(sum(b.used), 0)\n"
            "        INTO v_requests, v_tokens, v_open, v_allowance_available, v_purchased_available,\n"
            "            v_allowance_held, v_purchased_held, v_used\n",
        ),
        (
            "            RETURN NEXT;  -- over a limit: the general path refuses, with the limit and a retry delay\n"
            "            RETURN;\n"
            "        END IF;\n"
            "    END IF;\n",
            "            outcome := 'limited';  -- the general path refuses, with the limit and a retry delay\n"
            "            RETURN NEXT;\n"
            "            RETURN;\n"
            "        END IF;\n"
            "        v_checked := true;\n"
            "        outcome := 'checked';  -- what gives up from here on was within its limits\n"
            "    END IF;\n",
        ),
        (
            _FINAL_SUMS,
            _CHECKED_SUMS + "    ELSE\n" + _indented(_FINAL_SUMS) + "    END IF;\n",
        ),
    ),
    "0008's meter_reserve_fast",
)


def upgrade() -> None:
    op.execute(RESERVE)


def downgrade() -> None:
    op.execute(_0008.RESERVE.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
