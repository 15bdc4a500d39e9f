"""A fingerprint of each applied event beside its id, to tell a repeat from a conflict.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    # Nullable, no default: PostgreSQL adds it without rewriting the table. Ids applied
    # before have none and are never reported as conflicts. (IF NOT EXISTS: 0002 creates
    # the table as shared/db/tables.py declares it, with the column, on a new database.)
    op.execute("ALTER TABLE processed_events ADD COLUMN IF NOT EXISTS fingerprint bigint")


def downgrade() -> None:
    op.execute("ALTER TABLE processed_events DROP COLUMN IF EXISTS fingerprint")
