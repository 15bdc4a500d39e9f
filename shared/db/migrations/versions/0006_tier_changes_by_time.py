"""Tier changes by when they were recorded (`GET /v1/stats/transitions`): a BRIN index,
cheap on a table that only grows in time order.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS tier_changes_created_at ON tier_changes "
               "USING brin (created_at)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS tier_changes_created_at")
