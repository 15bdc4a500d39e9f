"""The first schema: customers, dedupe, offsets, policies, tier changes, jobs.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None

NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("aggregates", JSONB, nullable=False),
        sa.Column("tiers", JSONB, nullable=False),
        sa.Column("policy_version", sa.Integer, nullable=False),
        sa.Column("graded_on", sa.Date, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_index("customers_graded_on", "customers", ["graded_on"])
    op.create_index("customers_policy_version", "customers", ["policy_version"])
    op.create_table("processed_events", sa.Column("event_id", sa.Text, primary_key=True))
    op.create_table(
        "consumer_offsets",
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("cluster_id", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_table(
        "policies",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("document", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_table(
        "tier_changes",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("message_id", UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("ladder", sa.Text, nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
    )
    op.create_index("tier_changes_customer", "tier_changes", ["customer_id", "id"])
    op.create_index(
        "tier_changes_unsent", "tier_changes", ["id"], postgresql_where=sa.text("sent_at IS NULL")
    )
    op.create_table(
        "jobs",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("done", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("changed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("policy_version", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )


def downgrade() -> None:
    for table in ("jobs", "tier_changes", "policies", "consumer_offsets", "processed_events"):
        op.drop_table(table)
    op.drop_table("customers")
