"""The shapes the hot-path functions share, each spelled once (issue 35).

meter_pricing: what a hold pins of its model's catalog entry (Reserve takes it, ChargeUsage too).
meter_reserve_call: one Reserve's own arguments (a batch of Reserves is an array of them).
meter_balance_row: the balance every answer of the hot path carries, and GetBalance reads.

The reservation id is composed by one function (meter_reservation_id): usage_records, which
composed it inline, shows the hold's id instead (a reservation id is `<account_id>/<hold_id
without dashes>`; `SELECT meter_reservation_id(account_id, hold_id)` composes it).

Forward-only: restore the backup taken before upgrading to go back (docs/operate.md).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

STATEMENTS = (
    """CREATE TYPE meter_pricing AS (
    catalog_version text, input_weight bigint, output_weight bigint, input_price bigint, output_price bigint,
    cached_input_weight bigint, cache_write_weight bigint, reasoning_weight bigint, cached_input_price bigint,
    cache_write_price bigint, reasoning_price bigint, usage_labels jsonb
)""",
    """CREATE TYPE meter_reserve_call AS (
    account_id text, request_id text, hold_id uuid, model text, input_tokens bigint, max_output_tokens bigint,
    ttl_seconds integer, labels jsonb, pricing meter_pricing, start integer
)""",
    """CREATE TYPE meter_balance_row AS (
    plan_id text, period_start timestamp with time zone, period_end timestamp with time zone,
    paid_through timestamp with time zone, allowance_total bigint, debt bigint, warned smallint,
    allowance_remaining bigint, purchased_remaining bigint, allowance_held bigint, purchased_held bigint,
    used bigint
)""",
    "DROP VIEW usage_records",
    """CREATE VIEW usage_records AS
 SELECT holds.account_id,
    holds.hold_id,
    holds.request_id,
    holds.settled_at AS committed_at,
    holds.model,
    holds.catalog_version,
    holds.usage_input_tokens AS input_tokens,
    holds.usage_output_tokens AS output_tokens,
    holds.charged_tokens,
    holds.cost_micros,
    holds.unbilled_tokens,
    holds.late,
    holds.labels,
    holds.usage_cached_input_tokens AS cached_input_tokens,
    holds.usage_cache_write_tokens AS cache_write_tokens,
    holds.usage_reasoning_tokens AS reasoning_tokens,
    holds.usage_labels
   FROM holds
  WHERE (holds.status = 'committed'::text)""",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("forward-only: restore the backup taken before the upgrade")
