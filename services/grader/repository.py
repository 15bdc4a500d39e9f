"""PostgreSQL access for grading: bulk statements on a raw asyncpg connection.

Every statement takes arrays (`unnest`) so a batch costs a handful of round trips
whatever its size; keys are sorted so concurrent writers lock rows in one order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
import orjson

from shared.errors import TierflowError


class Fenced(TierflowError):
    """Another consumer advanced this partition first: roll back and re-seek."""


@dataclass(frozen=True, slots=True)
class OffsetAdvance:
    """Move a partition's stored position from `expected` to `new`."""

    partition: int
    expected: int
    new: int
    cluster_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredCustomer:
    """One customer row as stored: JSON documents not yet decoded."""

    customer_id: str
    aggregates: dict[str, Any]
    tiers: dict[str, Any]
    policy_version: int


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A message to relay, recorded in the same transaction as its cause."""

    message_id: str
    customer_id: str
    ladder: str
    sequence: int
    kind: str
    payload: dict[str, Any]


ADVANCE = """
UPDATE consumer_offsets o SET next_offset = u.new, cluster_id = u.cluster, updated_at = now()
FROM unnest($2::int[], $3::bigint[], $4::bigint[], $5::text[]) AS u(p, expected, new, cluster)
WHERE o.topic = $1 AND o.partition = u.p AND o.next_offset = u.expected
"""
# No FOR UPDATE: hold_places has already locked every one of these rows, in id order.
LOAD = """
SELECT customer_id, aggregates::text, tiers::text, policy_version FROM customers
WHERE customer_id = ANY($1::text[])
"""
PLACEHOLD = """
INSERT INTO customers (customer_id, aggregates, tiers, policy_version, graded_on)
SELECT unnest($1::text[]), $2::jsonb, '{}'::jsonb, 0, $3
ON CONFLICT (customer_id) DO UPDATE SET policy_version = customers.policy_version WHERE false
"""
UNPLACE = "DELETE FROM customers WHERE customer_id = ANY($1::text[]) AND policy_version = 0"
CLAIM = """
INSERT INTO processed_events (event_id) SELECT unnest($1::text[])
ON CONFLICT DO NOTHING RETURNING event_id
"""
SAVE = """
INSERT INTO customers (customer_id, aggregates, tiers, policy_version, graded_on, updated_at)
SELECT u.id, u.agg::jsonb, u.tiers::jsonb, $4, $5, $6
FROM unnest($1::text[], $2::text[], $3::text[]) AS u(id, agg, tiers)
ON CONFLICT (customer_id) DO UPDATE SET aggregates = EXCLUDED.aggregates,
  tiers = EXCLUDED.tiers, policy_version = EXCLUDED.policy_version,
  graded_on = EXCLUDED.graded_on, updated_at = EXCLUDED.updated_at
"""
RECORD = """
INSERT INTO tier_changes (message_id, customer_id, ladder, sequence, kind, payload)
SELECT u.m, u.c, u.l, u.s, u.k, u.p::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[])
  AS u(m, c, l, s, k, p)
"""
DUE = """
SELECT customer_id, aggregates::text, tiers::text, policy_version FROM customers
WHERE (policy_version < $1 OR graded_on < $2) AND customer_id > $4
ORDER BY customer_id LIMIT $3 FOR UPDATE SKIP LOCKED
"""
OFFSETS = "SELECT partition, next_offset, cluster_id FROM consumer_offsets WHERE topic = $1"
INIT_OFFSETS = """
INSERT INTO consumer_offsets (topic, partition, next_offset, cluster_id)
SELECT $1, unnest($2::int[]), 0, $3 ON CONFLICT DO NOTHING
"""


async def advance_offsets(
    conn: asyncpg.Connection, topic: str, advances: Sequence[OffsetAdvance]
) -> None:
    """Fence and move stored positions; raises Fenced if any was not where we left it."""
    status = await conn.execute(
        ADVANCE, topic, [a.partition for a in advances], [a.expected for a in advances],
        [a.new for a in advances], [a.cluster_id for a in advances],
    )
    if int(status.rsplit(" ", 1)[1]) != len(advances):
        raise Fenced(f"{topic}: a stored position moved under us")


def _stored(records: Sequence[asyncpg.Record]) -> list[StoredCustomer]:
    return [
        StoredCustomer(r[0], orjson.loads(r[1]), orjson.loads(r[2]), r[3]) for r in records
    ]


async def load_customers(conn: asyncpg.Connection, ids: Sequence[str]) -> list[StoredCustomer]:
    """The rows of these customers (call after `hold_places`, which locks them)."""
    return _stored(await conn.fetch(LOAD, sorted(ids)))


async def hold_places(
    conn: asyncpg.Connection, ids: Sequence[str], *, empty: dict[str, Any], today: date
) -> None:
    """Make sure a row exists for every id (version 0 marks a placeholder) and lock them
    all, in id order, in this one statement: ON CONFLICT DO UPDATE locks the existing row
    even though `WHERE false` updates nothing. So two writers that both see a customer as
    new (a producer that did not key by customer) are serialised, not lost, and locks
    are always taken in one global order (no deadlock between writers)."""
    await conn.execute(PLACEHOLD, sorted(ids), orjson.dumps(empty).decode(), today)


async def drop_places(conn: asyncpg.Connection, ids: Sequence[str]) -> None:
    """Remove placeholders that received no event after all (every event was a repeat)."""
    if ids:
        await conn.execute(UNPLACE, list(ids))


async def claim_events(conn: asyncpg.Connection, event_ids: Sequence[str]) -> set[str]:
    """Record event ids as processed; returns those not seen before."""
    rows = await conn.fetch(CLAIM, sorted(event_ids))
    return {r[0] for r in rows}


async def due_customers(
    conn: asyncpg.Connection, *, version: int, today: date, limit: int, after: str = ""
) -> list[StoredCustomer]:
    """Rows graded under an older policy or on an earlier day, locked, skipping busy ones;
    keyset-paginated (`after` the last id seen) so a sweep reads each row once."""
    return _stored(await conn.fetch(DUE, version, today, limit, after))


async def save_customers(
    conn: asyncpg.Connection, rows: Sequence[tuple[str, dict[str, Any], dict[str, Any]]],
    *, version: int, today: date, now: datetime,
) -> None:
    """Upsert (customer_id, aggregates, tiers) rows graded under `version` on `today`."""
    if not rows:
        return
    rows = sorted(rows, key=lambda row: row[0])
    await conn.execute(
        SAVE, [r[0] for r in rows], [orjson.dumps(r[1]).decode() for r in rows],
        [orjson.dumps(r[2]).decode() for r in rows], version, today, now,
    )


async def record_changes(conn: asyncpg.Connection, rows: Sequence[OutboxRow]) -> None:
    """Insert outbox rows; the notifier relays them in id order."""
    if not rows:
        return
    await conn.execute(
        RECORD, [r.message_id for r in rows], [r.customer_id for r in rows],
        [r.ladder for r in rows], [r.sequence for r in rows], [r.kind for r in rows],
        [orjson.dumps(r.payload).decode() for r in rows],
    )
    await conn.execute("NOTIFY tierflow_outbox")


async def stored_offsets(
    conn: asyncpg.Connection, topic: str, partitions: Sequence[int], *, cluster_id: str | None
) -> dict[int, tuple[int, str | None]]:
    """Stored (position, cluster id) of these partitions, created at 0 when first seen."""
    await conn.execute(INIT_OFFSETS, topic, list(partitions), cluster_id)
    rows = await conn.fetch(OFFSETS, topic)
    wanted = set(partitions)
    return {r[0]: (r[1], r[2]) for r in rows if r[0] in wanted}


async def latest_policy(conn: asyncpg.Connection) -> tuple[int, dict[str, Any]] | None:
    """The newest policy version and its document."""
    row = await conn.fetchrow(
        "SELECT version, document::text FROM policies ORDER BY version DESC LIMIT 1"
    )
    return (row[0], orjson.loads(row[1])) if row else None


async def latest_policy_version(conn: asyncpg.Connection) -> int:
    """Only the newest version number: cheap enough to ask on every batch."""
    version = await conn.fetchval("SELECT max(version) FROM policies")
    return int(version or 0)


async def insert_policy(conn: asyncpg.Connection, document: dict[str, Any]) -> int:
    """Store a new policy version; returns its number."""
    version = await conn.fetchval(
        "INSERT INTO policies (document) VALUES ($1::jsonb) RETURNING version",
        orjson.dumps(document).decode(),
    )
    return int(version)
