"""Customer ids compare byte by byte (`COLLATE "C"`), in every table that holds them.

Ids are opaque keys: nothing sorts them for people. Under a linguistic collation (the
`en_US.utf8` of a stock server) every comparison in their b-trees went through the C
library's `strcoll`, and a customer's row, its tier changes and its webhook lanes are
found and written by these indexes on every grading. Equality is unchanged (both
collations are deterministic); the order of ids in member lists becomes byte order, which
is also the order Python sorts them in. All the columns change together: PostgreSQL
refuses to compare two columns of different collations.

No table is rewritten (the type stays `text`); the indexes on these columns are rebuilt,
under a lock: on a big database, run it in a quiet hour.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"

TABLES = ("customers", "tier_changes", "webhook_deliveries", "webhook_lanes")


def upgrade() -> None:
    for table in TABLES:
        op.execute(f'ALTER TABLE {table} ALTER COLUMN customer_id TYPE text COLLATE "C"')


def downgrade() -> None:
    for table in TABLES:
        op.execute(f'ALTER TABLE {table} ALTER COLUMN customer_id TYPE text COLLATE "default"')
