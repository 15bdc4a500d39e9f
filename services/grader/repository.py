"""PostgreSQL access for grading, and the only code that knows how state is stored.

A customer's figures and ladder states are one MessagePack array in `customers.state`
(bytea): a few microseconds to encode or decode, no JSON re-parsed by the server, and
nothing in it grows without bound (see grading/aggregates.py). Everything else the API
filters on (`tiers`, `policy_version`, `graded_on`, `partition`) is a plain column.

The consumer that owns a partition is the only writer of its customers, so a checkpoint
needs no row locks: it stages the changed customers with binary COPY, updates the stored
ones and inserts the new ones from the stage, appends the outbox with COPY, and moves the
stored positions with a fence in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from hashlib import blake2b
from typing import Any

import asyncpg
import msgspec
import orjson

from services.grader import jobs
from services.grader.grading.aggregates import Aggregates
from services.grader.grading.customer import CustomerState, TierChange, message_id
from services.grader.grading.evaluate import LadderState, Override
from services.grader.grading.messages import ERASED, erasure_message, message_json
from shared.errors import TierflowError
from shared.events import Event, event_json

FORMAT = 3  # 1 and 2 (one flat array) are still read
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


class Fenced(TierflowError):
    """Another consumer advanced this partition first: roll back and re-seek."""


class StateCorrupt(TierflowError):
    """A stored state this version cannot read."""


@dataclass(frozen=True, slots=True)
class OffsetAdvance:
    """Move a partition's stored position from `expected` to `new`."""

    partition: int
    expected: int
    new: int
    cluster_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredCustomer:
    """A customer as the API shows it: the state and when its row last changed."""

    state: CustomerState
    updated_at: datetime


@dataclass
class Checkpoint:
    """Everything one commit makes durable, together, already in its stored form (a
    checkpoint is written while its consumer goes on changing the states in memory)."""

    topic: str
    advances: Sequence[OffsetAdvance]
    event_rows: list[tuple[str, date, int]]  # (key, day, fingerprint) of new ids
    renewed: list[tuple[str, int]]  # (key, fingerprint) of ids seen again after the window
    customer_rows: list[tuple[Any, ...]]
    outbox_rows: list[tuple[Any, ...]]
    seen_on: date
    policy_regrades: int = 0  # customers re-graded for a new policy (job progress)
    policy_changed: int = 0
    policy_version: int = 0
    erased: list[str] = field(default_factory=list)  # customers to delete first

    @classmethod
    def build(
        cls, *, topic: str, advances: Sequence[OffsetAdvance],
        event_keys: Iterable[tuple[str, int]], renewed: Iterable[str],
        customers: Iterable[tuple[int, CustomerState]] = (),
        customer_rows: Sequence[tuple[Any, ...]] = (),
        changes: Sequence[TierChange],
        now: datetime, policy_regrades: int = 0, policy_changed: int = 0,
        policy_version: int = 0, erased: Sequence[tuple[str, datetime]] = (),
    ) -> Checkpoint:
        """Encode the states (partition, state) and the change messages now (`customer_rows`:
        states encoded already, by `customer_row`); `event_keys`
        are the (`event_key`, `event_fingerprint`) of the applied events and controls,
        `renewed` the keys of those seen before; `erased`, (customer, when asked) whose rows,
        history and deliveries go before anything else is written (each gets a notice)."""
        rows = [*customer_rows,
                *(customer_row(partition, state, now) for partition, state in customers)]
        outbox = [(mid, cid, "", 0, ERASED,
                   orjson.dumps(erasure_message(mid, cid, at)).decode())
                  for cid, at, mid in ((cid, at, message_id()) for cid, at in erased)]
        outbox += [(tc.message_id, tc.customer_id, tc.change.ladder, tc.change.sequence,
                    tc.change.kind, message_json(tc)) for tc in changes]
        today = now.date()
        again = set(renewed)
        fresh, seen_before = [], []
        for key, fingerprint in event_keys:
            if key in again:
                seen_before.append((key, fingerprint))
            else:
                fresh.append((key, today, fingerprint))
        return cls(topic, advances, fresh, seen_before, rows, outbox, today,
                   policy_regrades, policy_changed, policy_version, [cid for cid, _ in erased])


def customer_row(partition: int, state: CustomerState, now: datetime) -> tuple[Any, ...]:
    """A customer's row as a checkpoint writes it (`STAGE_COLUMNS`), encoded now."""
    return (state.customer_id, partition, encode_state(state), tiers_literal(state),
            state.policy_version, date.fromordinal(state.graded_on),
            date.fromordinal(state.due_on) if state.due_on is not None else None, now)


# A customer as stored (`decode_state`'s arguments but the id): the state's bytes, policy
# version, graded on, due on.
Stored = tuple[bytes, int, date, date | None]


def stored_form(row: tuple[Any, ...]) -> Stored:
    """The stored form of a `customer_row`."""
    return row[2], row[4], row[5], row[6]


# --- the storage format ------------------------------------------------------------------

class _Stored(msgspec.Struct, array_like=True, gc=False):
    """The stored form (format 3): [3, aggregates, {ladder: state}, {ladder: override},
    salt], each struct an array in its field order."""

    format: int
    aggregates: Aggregates
    ladders: dict[str, LadderState]
    overrides: dict[str, Override]
    salt: bytes | None


_decode_stored = msgspec.msgpack.Decoder(_Stored).decode
# A format-3 row starts with a 5-element array whose first element is 3.
_FORMAT_3_HEAD = bytes((0x95, 3))


def encode_state(state: CustomerState) -> bytes:
    """The bytes stored in `customers.state`: msgspec encodes the structs, the day buckets,
    the window sums and the instants as they are held, in C."""
    return _encode(_Stored(FORMAT, state.aggregates, state.ladders, state.overrides,
                           state.salt))


def decode_state(customer_id: str, blob: bytes, policy_version: int, graded_on: date,
                 due_on: date | None = None) -> CustomerState:
    """The inverse of `encode_state`: decoded and type-checked in C into the very
    objects grading uses. Rows of formats 1 and 2 (a flat array) are read too."""
    if blob[:2] != _FORMAT_3_HEAD:
        return _decode_flat(customer_id, blob, policy_version, graded_on, due_on)
    try:
        stored = _decode_stored(blob)
    except msgspec.MsgspecError as exc:
        raise StateCorrupt(f"customer {customer_id!r}: unreadable state: {exc}") from exc
    return CustomerState(customer_id, stored.aggregates, stored.ladders, policy_version,
                         graded_on.toordinal(), due_on.toordinal() if due_on else None,
                         stored.overrides, stored.salt)


def _decode_flat(customer_id: str, blob: bytes, policy_version: int, graded_on: date,
                 due_on: date | None) -> CustomerState:
    """Formats 1 and 2: one flat array (format 1 held instants as integer microseconds
    since 1970; rows stored before overrides and salts have neither)."""
    try:
        doc = _decode(blob)
    except msgspec.MsgspecError as exc:
        raise StateCorrupt(f"customer {customer_id!r}: unreadable state: {exc}") from exc
    if not isinstance(doc, list) or not doc or doc[0] not in (1, 2):
        head = doc[0] if isinstance(doc, list) and doc else doc
        raise StateCorrupt(f"customer {customer_id!r}: unknown state format {head}")
    (_, purchases, refunds, orders, first, last, categories, interactions, referrals,
     complaints, last_interaction, last_activity, rating_sum, ratings, nps, nps_key, as_of,
     days, sums, ladders) = doc[:20]
    overrides, salt = (doc[20], doc[21]) if len(doc) > 20 else ([], None)
    if doc[0] == 1:
        ladders, overrides = _instants_of_format_1(ladders, overrides)
    aggregates = Aggregates(
        purchases, refunds, orders, first, last, set(categories), interactions, referrals,
        complaints, last_interaction, last_activity, rating_sum, ratings, nps,
        (nps_key[0], nps_key[1]) if nps_key else None, days, as_of, sums,
    )
    states = {
        name: LadderState(tier, since, computed,
                          date.fromordinal(pending) if pending else None, seq)
        for name, tier, since, computed, pending, seq in ladders
    }
    pins = {
        name: Override(tier, reason, set_at, expires, ended)
        for name, tier, reason, set_at, expires, ended in overrides
    }
    return CustomerState(customer_id, aggregates, states, policy_version,
                         graded_on.toordinal(), due_on.toordinal() if due_on else None,
                         pins, salt)


def _instants_of_format_1(ladders: list[list[Any]], overrides: list[list[Any]],
                          ) -> tuple[list[list[Any]], list[list[Any]]]:
    def moment(micros: int | None) -> datetime | None:
        return None if micros is None else EPOCH + timedelta(microseconds=micros)

    return ([[n, t, moment(since), c, p, q] for n, t, since, c, p, q in ladders],
            [[n, t, r, moment(at), moment(exp), e] for n, t, r, at, exp, e in overrides])


def stored_salt(blob: bytes) -> bytes | None:
    """The dedupe salt of a stored state (`CustomerState.salt`)."""
    return decode_state("", blob, 0, date.min).salt


def tier_labels(state: CustomerState) -> list[str]:
    """The `customers.tiers` column: "ladder:tier" for every ladder graded."""
    return [f"{name}:{s.tier}" for name, s in state.ladders.items()]


def tiers_literal(state: CustomerState) -> str:
    """`tier_labels` as the text of a PostgreSQL array (ladder and tier names need no
    escaping: the policy allows [a-z0-9_] only)."""
    return "{" + ",".join([f'"{label}"' for label in tier_labels(state)]) + "}"


# --- statements ----------------------------------------------------------------------------

# `tiers` is staged as the text of an array literal (names are [a-z0-9_], see
# `tiers_literal`): the driver's array encoder was a tenth of the consumer's CPU per row.
STAGE = """
CREATE TEMP TABLE IF NOT EXISTS customers_stage (
  customer_id text, partition int, state bytea, tiers text, policy_version int,
  graded_on date, due_on date, updated_at timestamptz) ON COMMIT DELETE ROWS
"""
STAGE_COLUMNS = ("customer_id", "partition", "state", "tiers", "policy_version", "graded_on",
                 "due_on", "updated_at")
# The staged rows of customers stored before are updated in place, the others inserted
# (on a connection with KEYED_LOOKUPS: a look-up by key per row). An upsert (INSERT ... ON
# CONFLICT DO UPDATE) cost a quarter more per row: it locks each row it finds first, and
# logs the lock (docs/performance.md). Only the owner writes a customer's row, so nothing
# can insert one between the two statements.
UPDATE_STAGED = """
UPDATE customers c SET partition = s.partition, state = s.state, tiers = s.tiers::text[],
  policy_version = s.policy_version, graded_on = s.graded_on, due_on = s.due_on,
  updated_at = s.updated_at
FROM customers_stage s WHERE c.customer_id = s.customer_id
"""
INSERT_STAGED = """
INSERT INTO customers (customer_id, partition, state, tiers, policy_version, graded_on,
                       due_on, updated_at)
SELECT customer_id, partition, state, tiers::text[], policy_version, graded_on, due_on,
       updated_at
FROM customers_stage s
WHERE NOT EXISTS (SELECT FROM customers c WHERE c.customer_id = s.customer_id)
"""
OUTBOX_COLUMNS = ("message_id", "customer_id", "ladder", "sequence", "kind", "payload")
ADVANCE = """
UPDATE consumer_offsets o SET next_offset = u.new, cluster_id = u.cluster, updated_at = now()
FROM unnest($2::int[], $3::bigint[], $4::bigint[], $5::text[]) AS u(p, expected, new, cluster)
WHERE o.topic = $1 AND o.partition = u.p AND o.next_offset = u.expected
"""
LOAD = """
SELECT customer_id, state, policy_version, graded_on, updated_at, due_on FROM customers
WHERE customer_id = ANY($1::text[])
"""
# The same columns, for every customer of some partitions (a what-if over everyone).
ALL_OF_PARTITIONS = """
SELECT customer_id, state, policy_version, graded_on, updated_at, due_on FROM customers
WHERE partition = ANY($1::int[])
"""
# Run on a connection with KEYED_LOOKUPS (shared/db/engine.py), or it scans the table.
SEEN = """
SELECT encode(uuid_send(event_hash), 'hex'), seen_on, fingerprint FROM processed_events
WHERE event_hash = ANY($1::uuid[])
"""
# An id seen before the window (not pruned yet) counts as new again: first seen now.
RENEW = """
UPDATE processed_events p SET seen_on = $3, fingerprint = u.fingerprint
FROM unnest($1::uuid[], $2::bigint[]) AS u(event_hash, fingerprint)
WHERE p.event_hash = u.event_hash
"""
PRUNE = """
DELETE FROM processed_events WHERE ctid = ANY(ARRAY(
  SELECT ctid FROM processed_events WHERE seen_on < $1 LIMIT $2))
"""
# Both on a connection with KEYED_LOOKUPS: index ranges, never a scan of the table. They
# read the rows whole, in the layout of LOAD, so a sweep needs no second look-up; but for
# `updated_at` (null: a sweep never shows it; decoding a timestamp was 1% of a re-grade).
OLDER_POLICY = """
SELECT customer_id, state, policy_version, graded_on, NULL::timestamptz, due_on FROM customers
WHERE partition = $1 AND customer_id > $2 AND policy_version < $3
ORDER BY customer_id LIMIT $4
"""
DUE_BY_DATE = """
SELECT customer_id, state, policy_version, graded_on, NULL::timestamptz, due_on FROM customers
WHERE partition = $1 AND due_on <= $2 AND (due_on, customer_id) > ($3, $4)
ORDER BY due_on, customer_id LIMIT $5
"""
# Everything held about some customers but their dedupe records (made unreadable by the
# loss of their salt, see `event_key`) and the notices about to be written.
# The customer's lanes give way to one marker lane (ladder '', no delivery before it) per
# subscription that was sent something about them — a change, or the notice of an earlier
# erasure, delivered or not (its delivery goes with it) — : the notifier sends the
# erasure notice to those subscriptions only (store.informed_of_erasure), and the fresh
# customer's deliveries start new lanes.
ERASE = """
WITH gone AS (DELETE FROM customers WHERE customer_id = ANY($1::text[])),
     changes AS (DELETE FROM tier_changes WHERE customer_id = ANY($1::text[])),
     lanes AS (
       DELETE FROM webhook_lanes WHERE (subscription_id, customer_id) IN (
         SELECT s.id, c FROM subscriptions s, unnest($1::text[]) AS c)  -- by primary key
       RETURNING subscription_id, customer_id, ladder)
SELECT DISTINCT subscription_id, customer_id FROM lanes
"""
# last_id 0: no delivery before it (ids start at 1).
MARK_INFORMED = """
INSERT INTO webhook_lanes (subscription_id, customer_id, ladder, last_id)
SELECT s, c, '', 0 FROM unnest($1::uuid[], $2::text[]) AS m(s, c)
ON CONFLICT DO NOTHING
"""
OFFSETS = "SELECT partition, next_offset, cluster_id FROM consumer_offsets WHERE topic = $1"
INIT_OFFSETS = """
INSERT INTO consumer_offsets (topic, partition, next_offset, cluster_id)
SELECT $1, unnest($2::int[]), 0, $3 ON CONFLICT DO NOTHING
"""


async def prepare(conn: asyncpg.Connection) -> None:
    """Per-connection setup for a consumer's own connection (the staging table)."""
    await conn.execute(STAGE)


async def load_customers(conn: asyncpg.Connection, ids: Sequence[str],
                         ) -> dict[str, StoredCustomer]:
    """The stored customers among `ids`."""
    return {r[0]: stored_customer(r) for r in await customer_rows(conn, ids)}


async def customer_rows(conn: asyncpg.Connection, ids: Sequence[str]) -> list[Any]:
    """The stored rows among `ids`, not decoded yet: (customer_id, ...) for
    `stored_customer`."""
    rows: list[Any] = await conn.fetch(LOAD, list(ids))
    return rows


def stored_customer(row: Any) -> StoredCustomer:
    """One row of `customer_rows`, decoded; raises StateCorrupt."""
    return StoredCustomer(state_of(row), row[4])


def state_of(row: Any) -> CustomerState:
    """The state of one row of `customer_rows` (or `due_rows`); raises StateCorrupt."""
    return decode_state(row[0], *stored_of(row))


def stored_of(row: Any) -> Stored:
    """The stored form of one row of `customer_rows` (or `due_rows`), not decoded."""
    return row[1], row[2], row[3], row[5]


def event_hash(event_id: str) -> str:
    """The 128-bit key an event id is remembered by when its customer has no salt (stored
    before salts existed), and for controls: 32 hex digits (asyncpg sends a str as a uuid
    without building a UUID object)."""
    return blake2b(event_id.encode(), digest_size=16).hexdigest()


def event_key(event_id: str, salt: bytes | None) -> str:
    """The key of an event id of a customer with this salt (`CustomerState.salt`): a keyed
    BLAKE2b, so once an erasure destroys the salt, nothing links the customer's dedupe
    records to their event ids any more (they are pruned when the window ends)."""
    if salt is None:
        return event_hash(event_id)
    return blake2b(event_id.encode(), digest_size=16, key=salt).hexdigest()


def event_fingerprint(event: Event) -> int:
    """64 bits of BLAKE2b over the event's canonical JSON, as a signed bigint: equal for a
    repeat of the event, different (but for a 2**-64 chance) for another event under the
    same id. The canonical form keeps spellings apart: `"10.0"` and `"10.00"`, or the same
    instant at two offsets, differ. ~1 µs an event."""
    digest = blake2b(event_json(event), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class Seen:
    """What the dedupe table knows of some keys (`event_key`)."""

    within: set[str]  # first seen inside the window: repeats
    expired: set[str]  # first seen before it (not pruned yet): new again
    fingerprints: dict[str, int | None]  # key -> the fingerprint stored with it


async def seen_events(conn: asyncpg.Connection, keys: Sequence[str], *, since: date) -> Seen:
    """Which of `keys` were applied before, inside the window (first seen on `since` or
    later) or before it."""
    within: set[str] = set()
    expired: set[str] = set()
    fingerprints: dict[str, int | None] = {}
    if not keys:
        return Seen(within, expired, fingerprints)
    for key, seen_on, fingerprint in await conn.fetch(SEEN, list(set(keys))):
        (within if seen_on >= since else expired).add(key)
        fingerprints[key] = fingerprint
    return Seen(within, expired, fingerprints)


async def prune_seen(conn: asyncpg.Connection, *, before: date, limit: int) -> int:
    """Forget up to `limit` event ids first seen before `before`; how many went."""
    status = await conn.execute(PRUNE, before, limit)
    return int(status.rsplit(" ", 1)[1])


@dataclass(frozen=True, slots=True)
class Sweep:
    """Where a sweep of one partition is: first through the customers graded under an
    older policy (in id order; only while a policy job runs), then through those whose
    due date has come (in date order)."""

    older_policy: bool
    due_on: date = date.min
    after: str = ""


async def due_rows(
    conn: asyncpg.Connection, partition: int, sweep: Sweep, *, version: int, today: date,
    limit: int,
) -> tuple[list[Any], Sweep | None]:
    """The rows (as `customer_rows`) of the next customers of a partition to re-grade
    without an event, and where the sweep goes on from (None: done). Each row is read once
    per sweep; the cost follows the customers due, not the size of the partition."""
    if sweep.older_policy:
        rows: list[Any] = await conn.fetch(OLDER_POLICY, partition, sweep.after, version, limit)
        if rows:
            return rows, Sweep(True, after=rows[-1][0])
        sweep = Sweep(False)
    rows = await conn.fetch(DUE_BY_DATE, partition, today, sweep.due_on, sweep.after, limit)
    if rows:
        return rows, Sweep(False, rows[-1][5], rows[-1][0])
    return [], None


async def write_checkpoint(conn: asyncpg.Connection, cp: Checkpoint) -> None:
    """Positions (fenced), dedupe ids, customers and outbox: all or nothing."""
    async with conn.transaction():
        if cp.advances:
            await _advance(conn, cp.topic, cp.advances)
        # Plain COPY: only the owner of a customer's partition applies its events, and it
        # looked the keys up first. Keys are salted per customer, so an event id reused
        # for another customer is another key (applied to each customer once).
        if cp.event_rows:
            await conn.copy_records_to_table(
                "processed_events", columns=("event_hash", "seen_on", "fingerprint"),
                records=cp.event_rows)
        if cp.renewed:
            await conn.execute(RENEW, [key for key, _ in cp.renewed],
                               [fingerprint for _, fingerprint in cp.renewed], cp.seen_on)
        if cp.erased:
            # Deliveries go with their tier changes (ON DELETE CASCADE).
            informed = await conn.fetch(ERASE, cp.erased)
            if informed:
                await conn.execute(MARK_INFORMED, [r[0] for r in informed],
                                   [r[1] for r in informed])
        if cp.customer_rows:
            await conn.copy_records_to_table(
                "customers_stage", columns=STAGE_COLUMNS, records=cp.customer_rows)
            status = await conn.execute(UPDATE_STAGED)
            if int(status.rsplit(" ", 1)[1]) < len(cp.customer_rows):
                await conn.execute(INSERT_STAGED)
        if cp.outbox_rows:
            await conn.copy_records_to_table(
                "tier_changes", columns=OUTBOX_COLUMNS, records=cp.outbox_rows)
            await conn.execute("NOTIFY tierflow_outbox")
        if cp.policy_regrades:
            await jobs.progress(conn, done=cp.policy_regrades, changed=cp.policy_changed,
                                version=cp.policy_version)


async def _advance(conn: asyncpg.Connection, topic: str,
                   advances: Sequence[OffsetAdvance]) -> None:
    """Fence and move stored positions; raises Fenced if any was not where we left it."""
    status = await conn.execute(
        ADVANCE, topic, [a.partition for a in advances], [a.expected for a in advances],
        [a.new for a in advances], [a.cluster_id for a in advances],
    )
    if int(status.rsplit(" ", 1)[1]) != len(advances):
        raise Fenced(f"{topic}: a stored position moved under us")


async def stored_offsets(
    conn: asyncpg.Connection, topic: str, partitions: Sequence[int], *, cluster_id: str | None
) -> dict[int, tuple[int, str | None]]:
    """Stored (position, cluster id) of these partitions, created at 0 when first seen."""
    await conn.execute(INIT_OFFSETS, topic, list(partitions), cluster_id)
    rows = await conn.fetch(OFFSETS, topic)
    wanted = set(partitions)
    return {r[0]: (r[1], r[2]) for r in rows if r[0] in wanted}


DISTRIBUTION = """
SELECT split_part(t, ':', 1), split_part(t, ':', 2), count(*)
FROM customers, unnest(tiers) AS t GROUP BY 1, 2
"""


# Newest first by the outbox's id (commit order per customer), from before a cursor.
HISTORY = """
SELECT id, payload::text FROM tier_changes
WHERE customer_id = $1 AND ($2::bigint IS NULL OR id < $2)
  AND ($3::text IS NULL OR ladder = $3)
ORDER BY id DESC LIMIT $4
"""
# Keyset pages in id order over the primary key, filtered on the tiers column (no index
# to keep up on every write): a page looks at most at $4 customers after the cursor, and
# says which it looked at last, so a rare tier costs many short pages, never a long scan.
MEMBERS = """
WITH scanned AS (
  SELECT customer_id, tiers FROM customers WHERE customer_id > $2
  ORDER BY customer_id LIMIT $4)
SELECT (SELECT coalesce(array_agg(customer_id ORDER BY customer_id), '{}') FROM (
          SELECT customer_id FROM scanned WHERE tiers @> ARRAY[$1::text]
          ORDER BY customer_id LIMIT $3) found),
       (SELECT max(customer_id) FROM scanned), (SELECT count(*) FROM scanned)
"""
MEMBERS_SCAN = 10_000
TRANSITIONS = """
SELECT ladder, payload->>'from_tier', payload->>'to_tier', payload->>'reason', count(*)
FROM tier_changes
WHERE kind = 'tier.changed' AND created_at >= $1 AND created_at < $2
GROUP BY 1, 2, 3, 4
"""


async def history(conn: asyncpg.Connection, customer_id: str, *, before: int | None,
                  ladder: str | None, limit: int) -> list[tuple[int, dict[str, Any]]]:
    """A customer's recorded changes (messages as sent), newest first."""
    rows = await conn.fetch(HISTORY, customer_id, before, ladder, limit)
    return [(r[0], orjson.loads(r[1])) for r in rows]


async def members(conn: asyncpg.Connection, ladder: str, tier: str, *, after: str,
                  limit: int) -> tuple[list[str], str | None]:
    """Up to `limit` customers on `tier` of `ladder` now, in id order after `after`, and
    where the next page starts (None: nobody after them)."""
    found, last, scanned = await conn.fetchrow(
        MEMBERS, f"{ladder}:{tier}", after, limit + 1, MEMBERS_SCAN)
    ids = list(found)
    if len(ids) > limit:
        return ids[:limit], ids[limit - 1]
    return ids, last if scanned == MEMBERS_SCAN else None


async def transitions(conn: asyncpg.Connection, since: datetime, until: datetime,
                      ) -> list[tuple[str, str | None, str, str, int]]:
    """Applied tier changes recorded in [since, until): (ladder, from, to, reason, count)."""
    return [(r[0], r[1], r[2], r[3], r[4]) for r in await conn.fetch(TRANSITIONS, since, until)]


async def tier_counts(conn: asyncpg.Connection) -> tuple[int, dict[tuple[str, str], int]]:
    """How many customers there are, and per (ladder, tier)."""
    counts = {(r[0], r[1]): r[2] for r in await conn.fetch(DISTRIBUTION)}
    total = await conn.fetchval("SELECT count(*) FROM customers")
    return int(total), counts


async def latest_policy(conn: asyncpg.Connection) -> tuple[int, dict[str, Any]] | None:
    """The newest policy version and its document."""
    row = await conn.fetchrow(
        "SELECT version, document::text FROM policies ORDER BY version DESC LIMIT 1"
    )
    return (row[0], orjson.loads(row[1])) if row else None


async def latest_policy_version(conn: asyncpg.Connection) -> int:
    """Only the newest version number: cheap enough to ask on every checkpoint."""
    version = await conn.fetchval("SELECT max(version) FROM policies")
    return int(version or 0)


async def policy_versions(conn: asyncpg.Connection, *, before: int | None, limit: int,
                          ) -> list[tuple[int, datetime, dict[str, Any]]]:
    """Stored versions, newest first, older than `before` when given."""
    rows = await conn.fetch(
        "SELECT version, created_at, document::text FROM policies "
        "WHERE $1::int IS NULL OR version < $1 ORDER BY version DESC LIMIT $2", before, limit)
    return [(r[0], r[1], orjson.loads(r[2])) for r in rows]


async def policy_version(conn: asyncpg.Connection, version: int,
                         ) -> tuple[datetime, dict[str, Any]] | None:
    """One stored version: when it was stored, and its document."""
    row = await conn.fetchrow(
        "SELECT created_at, document::text FROM policies WHERE version = $1", version)
    return (row[0], orjson.loads(row[1])) if row else None


async def insert_policy(conn: asyncpg.Connection, document: dict[str, Any]) -> int:
    """Store a new version; returns its number."""
    version = await conn.fetchval(
        "INSERT INTO policies (document) VALUES ($1::jsonb) RETURNING version",
        orjson.dumps(document).decode(),
    )
    return int(version)
