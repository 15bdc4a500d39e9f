"""The schema, declared once; Alembic migrations create it and queries are built on it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB, UUID

metadata = MetaData()

# Customer ids: opaque keys, compared byte by byte (migration 0008), not by a language's
# rules: cheaper in every b-tree that holds them, and the order Python sorts them in.
ID = Text(collation="C")

# One row per customer, written only by the consumer that owns the customer's partition.
customers = Table(
    "customers",
    metadata,
    Column("customer_id", ID, primary_key=True),
    # The events partition that owns the customer (murmur2 of the id, as Kafka picks it).
    Column("partition", Integer, nullable=False),
    # Figures and ladder states in the repository's binary format (services/grader/
    # repository.py is the only code that reads or writes it).
    Column("state", LargeBinary, nullable=False),
    # "ladder:tier" per ladder, for counts and member lists without decoding `state`.
    Column("tiers", ARRAY(Text), nullable=False),
    Column("policy_version", Integer, nullable=False),
    # The UTC date of the last grading.
    Column("graded_on", Date, nullable=False),
    # The first UTC date on which time alone may move the customer (a window dropping a
    # day, a days-since threshold, a grace period ending): the owner re-grades the rows
    # whose date has come, and no others. Null: nothing but an event or a policy can.
    Column("due_on", Date),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Room on each page for the new version of a row: updates stay HOT (no index writes).
    postgresql_with={"fillfactor": 70},
)
# The owner's re-grading sweep walks its partitions in id order.
Index("customers_partition", customers.c.partition, customers.c.customer_id)
# ... and finds the customers due by date.
Index("customers_due", customers.c.partition, customers.c.due_on, customers.c.customer_id,
      postgresql_where=customers.c.due_on.isnot(None))

# Applied event ids, as a 128-bit BLAKE2b hash of the id (16 bytes, cheaper to index
# than the text), with the UTC day tierflow first saw them: the dedupe window. Rows older
# than the window are pruned; BRIN keeps that range cheap to find and to maintain.
# `fingerprint` (64-bit BLAKE2b of the event's canonical JSON) tells a repeat of the event
# from another event under the same id; null for ids applied before it was kept.
processed_events = Table(
    "processed_events",
    metadata,
    Column("event_hash", UUID(as_uuid=True), primary_key=True),
    Column("seen_on", Date, nullable=False),
    Column("fingerprint", BigInteger),
)
Index("processed_events_seen_on", processed_events.c.seen_on, postgresql_using="brin")

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
    # Random (uuid4), made by the grader and never looked up: no index (migration 0007).
    Column("message_id", UUID(as_uuid=True), nullable=False),
    Column("customer_id", ID, nullable=False),
    Column("ladder", Text, nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("kind", Text, nullable=False),
    # The message as sent, byte for byte (json, not jsonb: never re-parsed on the way in).
    Column("payload", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True)),
)
Index("tier_changes_customer", tier_changes.c.customer_id, tier_changes.c.id)
# Transitions of a period: rows arrive in time order, so a BRIN index is enough.
Index("tier_changes_created_at", tier_changes.c.created_at, postgresql_using="brin")
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

# Webhook subscriptions (the notifier's). Secrets are stored encrypted with the
# notifier's key (services/notifier/webhooks/vault.py), never in plain text.
subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("url", Text, nullable=False),
    # {"ladders", "to_tiers", "directions", "types"}: a list each, or absent for "any".
    Column("filter", JSONB, nullable=False),
    Column("secret", LargeBinary, nullable=False),
    # After a rotation the previous secret signs too, until it expires.
    Column("previous_secret", LargeBinary),
    Column("previous_expires_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One row per (subscription, tier change): the delivery and where its attempts stand.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "subscription_id", UUID(as_uuid=True),
        ForeignKey("subscriptions.id", ondelete="CASCADE"), nullable=False,
    ),
    Column(
        "change_id", BigInteger, ForeignKey("tier_changes.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # The lane a delivery waits in: one customer's changes on one ladder go in order.
    Column("customer_id", ID, nullable=False),
    Column("ladder", Text, nullable=False),
    # The lane's previous delivery: while that one is pending this one waits, with
    # next_attempt_at 'infinity', and is made due when that one ends (store.record).
    Column("after_id", BigInteger),
    # pending, delivered or failed.
    Column("status", Text, nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    # Set while one notifier process is attempting it: no other one takes it meanwhile.
    Column("leased_until", DateTime(timezone=True)),
    # An admin asked for one more attempt: a failure ends it as failed again.
    Column("manual", Boolean, nullable=False, server_default=text("false")),
    Column("last_attempt_at", DateTime(timezone=True)),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("delivered_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
# A subscription's due deliveries, oldest first (the dispatcher's claim). Waiting ones
# sit at the end ('infinity'), so the claim never reads past them.
Index(
    "webhook_deliveries_due",
    webhook_deliveries.c.subscription_id, webhook_deliveries.c.next_attempt_at,
    webhook_deliveries.c.id,
    postgresql_where=text("status = 'pending'"),
)
# The delivery waiting for this one (a lane is a chain: at most one each).
Index("webhook_deliveries_after", webhook_deliveries.c.after_id, unique=True)
# A subscription's deliveries, newest first (the admin's list), and the change's.
Index("webhook_deliveries_subscription", webhook_deliveries.c.subscription_id,
      webhook_deliveries.c.id)
Index("webhook_deliveries_change", webhook_deliveries.c.change_id)

# Each lane's latest delivery, found by its key: every lane lookup is by primary key or
# by a unique index, so no planner estimate (stale after a burst) can turn one into a scan.
webhook_lanes = Table(
    "webhook_lanes",
    metadata,
    Column(
        "subscription_id", UUID(as_uuid=True),
        ForeignKey("subscriptions.id", ondelete="CASCADE"), primary_key=True,
    ),
    Column("customer_id", ID, primary_key=True),
    Column("ladder", Text, primary_key=True),
    Column("last_id", BigInteger, nullable=False),
)
