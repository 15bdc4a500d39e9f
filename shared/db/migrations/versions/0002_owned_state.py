"""Binary customer state owned per partition; dedupe ids with the day first seen.

The 0.1 state (JSON aggregates) is not converted: tierflow had no releases with users,
and the state is a fold of the events, so replaying the topic rebuilds it. Positions,
the outbox and jobs are cleared with it, so the replay starts from the beginning and
tier-change sequences start again at 1.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from shared.db.tables import customers, processed_events

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.drop_table("customers")
    op.drop_table("processed_events")
    # The tables as shared/db/tables.py declares them: the schema is written once.
    customers.create(op.get_bind())
    processed_events.create(op.get_bind())
    op.execute("TRUNCATE consumer_offsets, tier_changes, jobs")


def downgrade() -> None:
    raise NotImplementedError("0002 replaces the state format; restore a backup instead")
