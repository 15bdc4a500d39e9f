"""The schema, declared once; Alembic migrations create it and queries are built on it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = MetaData()

customers = Table(
    "customers",
    metadata,
    Column("customer_id", Text, primary_key=True),
    # The pure fold's state (shared by every ladder): totals, per-UTC-day buckets.
    Column("aggregates", JSONB, nullable=False),
    # Per ladder: tier, since, computed, pending_since, sequence.
    Column("tiers", JSONB, nullable=False),
    Column("policy_version", Integer, nullable=False),
    # The UTC date of the last grading: time alone re-grades rows whose date has passed.
    Column("graded_on", Date, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Index("customers_graded_on", customers.c.graded_on)
Index("customers_policy_version", customers.c.policy_version)

# Every applied event id, written in the same transaction as its effect: the dedupe.
processed_events = Table(
    "processed_events",
    metadata,
    Column("event_id", Text, primary_key=True),
)

# Consumer positions live beside the state they produced, not in Kafka.
consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("topic", Text, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    # The broker cluster the position belongs to: a position on another cluster (or on
    # an embedded broker that restarted empty) means nothing there.
    Column("cluster_id", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

policies = Table(
    "policies",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=True),
    Column("document", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# The outbox and the history at once: a row per message, relayed when sent_at is null.
tier_changes = Table(
    "tier_changes",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("message_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("customer_id", Text, nullable=False),
    Column("ladder", Text, nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("kind", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True)),
)
Index("tier_changes_customer", tier_changes.c.customer_id, tier_changes.c.id)
Index(
    "tier_changes_unsent",
    tier_changes.c.id,
    postgresql_where=text("sent_at IS NULL"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("total", BigInteger, nullable=False, server_default="0"),
    Column("done", BigInteger, nullable=False, server_default="0"),
    Column("changed", BigInteger, nullable=False, server_default="0"),
    Column("policy_version", Integer),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
