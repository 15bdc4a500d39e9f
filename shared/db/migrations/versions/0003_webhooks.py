"""Webhook subscriptions and their deliveries.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from shared.db.tables import subscriptions, webhook_deliveries, webhook_lanes

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    # The tables as shared/db/tables.py declares them: the schema is written once.
    subscriptions.create(op.get_bind())
    webhook_deliveries.create(op.get_bind())
    webhook_lanes.create(op.get_bind())


def downgrade() -> None:
    webhook_lanes.drop(op.get_bind())
    webhook_deliveries.drop(op.get_bind())
    subscriptions.drop(op.get_bind())
