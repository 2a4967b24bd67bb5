"""A hold records what it took from each pool it drew on, in the order it drew (issue 37): the
pools' names (holds.part_pools), what each part holds (part_held) and the bucket row the parts
sit on (part_bucket), with their total (held). Two fixed parts (allowance, purchased) were all a
hold could have; grants drawn in order need as many parts as the grants a hold spans.

Forward-only: restore the backup taken before upgrading to go back (docs/operate.md).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

STATEMENTS = (
    """ALTER TABLE holds ADD COLUMN held bigint, ADD COLUMN part_pools text[], ADD COLUMN part_held bigint[],
    ADD COLUMN part_bucket smallint""",
    """UPDATE holds SET held = allowance_held + purchased_held,
    part_pools = ARRAY(SELECT p.pool FROM (VALUES (1, 'allowance', allowance_held), (2, 'purchased', purchased_held))
        AS p (n, pool, amount) WHERE p.amount > 0 ORDER BY p.n),
    part_held = ARRAY(SELECT p.amount FROM (VALUES (1, allowance_held), (2, purchased_held)) AS p (n, amount)
        WHERE p.amount > 0 ORDER BY p.n),
    part_bucket = CASE WHEN allowance_held > 0 THEN allowance_bucket ELSE purchased_bucket END""",
    """ALTER TABLE holds ALTER COLUMN held SET NOT NULL, ALTER COLUMN part_pools SET NOT NULL,
    ALTER COLUMN part_held SET NOT NULL, ALTER COLUMN part_bucket SET NOT NULL,
    ADD CONSTRAINT holds_held_check CHECK (held >= 0),
    ADD CONSTRAINT holds_parts_check CHECK (cardinality(part_pools) = cardinality(part_held)),
    DROP COLUMN allowance_held, DROP COLUMN allowance_bucket, DROP COLUMN purchased_held,
    DROP COLUMN purchased_bucket""",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("forward-only: restore the backup taken before the upgrade")
