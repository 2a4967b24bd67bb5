"""SQLAlchemy Core tables; the schema itself is created by the Alembic migrations.

Every account-owned table has account_id first in its primary key, so every transaction touches
one account and the schema can be distributed by account_id (Citus).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("plan_id", Text, nullable=False),
    Column("monthly_allowance", BigInteger, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("calendar_periods", Boolean, nullable=False),
    Column("allowance_total", BigInteger, nullable=False),
    Column("debt", BigInteger, nullable=False),
    Column("bucket_count", SmallInteger, nullable=False),
    Column("subscription_ref", Text),
    Column("plan_event_time", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

buckets = Table(
    "buckets",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("pool", Text, primary_key=True),
    Column("bucket", SmallInteger, primary_key=True),
    Column("available", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),
    Column("used", BigInteger, nullable=False),
)

holds = Table(
    "holds",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("hold_id", Uuid(as_uuid=False), primary_key=True),
    Column("request_id", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("max_output_tokens", BigInteger, nullable=False),
    Column("ttl_seconds", Integer, nullable=False),
    Column("labels", JSONB, nullable=False),
    Column("catalog_version", Text, nullable=False),
    Column("input_weight", BigInteger, nullable=False),
    Column("output_weight", BigInteger, nullable=False),
    Column("input_price", BigInteger, nullable=False),
    Column("output_price", BigInteger, nullable=False),
    Column("allowance_held", BigInteger, nullable=False),
    Column("allowance_bucket", SmallInteger, nullable=False),
    Column("purchased_held", BigInteger, nullable=False),
    Column("purchased_bucket", SmallInteger, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("status", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("settled_at", DateTime(timezone=True)),
    Column("usage_input_tokens", BigInteger),
    Column("usage_output_tokens", BigInteger),
    Column("charged_tokens", BigInteger),
    Column("cost_micros", BigInteger),
    Column("unbilled_tokens", BigInteger),
    Column("late", Boolean),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("entry_id", BigInteger, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("kind", Text, nullable=False),
    Column("pool", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("reservation_id", Text),
    Column("ref", Text),
    Column("note", Text),
)

purchases = Table(
    "purchases",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("payment_ref", Text, primary_key=True),
    Column("pack_id", Text, nullable=False),
    Column("tokens", BigInteger, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("payment_intent", Text),
    Column("event_id", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

adjustments = Table(
    "adjustments",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("request_id", Text, primary_key=True),
    Column("pool", Text, nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
