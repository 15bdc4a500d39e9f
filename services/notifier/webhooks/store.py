"""Subscriptions and deliveries in PostgreSQL: the only module that writes their SQL.

Every time is passed in (the notifier's clock), never taken from `now()`, so tests can
move time and the retry schedule is the same whichever notifier process applies it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from services.notifier.webhooks.filters import Filter

NOTIFY_DELIVERIES = "tierflow_deliveries"
NOTIFY_SUBSCRIPTIONS = "tierflow_subscriptions"


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription as stored; secrets still sealed."""

    id: uuid.UUID
    url: str
    filter: Filter
    secret: bytes
    previous_secret: bytes | None
    previous_expires_at: datetime | None
    created_at: datetime

    def view(self) -> dict[str, Any]:
        """The API's JSON form (never the secret)."""
        return {
            "id": str(self.id), "url": self.url, "filter": self.filter.document(),
            "created_at": self.created_at,
            "previous_secret_expires_at": self.previous_expires_at,
        }


@dataclass(frozen=True, slots=True)
class Attempt:
    """A claimed delivery: what to send, and the attempt number that fences its result."""

    delivery_id: int
    attempts: int
    manual: bool
    customer_id: str
    ladder: str
    message_id: uuid.UUID
    body: bytes
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Result:
    """How an attempt ended. `retry_at` None and not `ok` means failed for good."""

    attempt: Attempt
    ok: bool
    status_code: int | None
    error: str | None
    at: datetime
    retry_at: datetime | None


# Each query names its columns in full (no SQL is built from pieces).


def _subscription(record: asyncpg.Record) -> Subscription:
    return Subscription(
        id=record["id"], url=record["url"],
        filter=Filter.from_document(orjson.loads(record["filter"])), secret=record["secret"],
        previous_secret=record["previous_secret"],
        previous_expires_at=record["previous_expires_at"], created_at=record["created_at"],
    )


async def create_subscription(
    conn: asyncpg.Connection, *, url: str, filter_: Filter, sealed: bytes, at: datetime
) -> Subscription:
    """Store a new subscription and wake the dispatchers."""
    async with conn.transaction():
        record = await conn.fetchrow(
            "INSERT INTO subscriptions (id, url, filter, secret, created_at)"
            " VALUES ($1, $2, $3::jsonb, $4, $5) RETURNING id, url, filter::text AS filter,"
            " secret, previous_secret, previous_expires_at, created_at",
            uuid.uuid4(), url, orjson.dumps(filter_.document()).decode(), sealed, at,
        )
        await conn.execute("NOTIFY " + NOTIFY_SUBSCRIPTIONS)
    return _subscription(record)


async def list_subscriptions(conn: asyncpg.Connection) -> list[Subscription]:
    """Every subscription, oldest first."""
    records = await conn.fetch(
        "SELECT id, url, filter::text AS filter, secret, previous_secret, previous_expires_at,"
        " created_at FROM subscriptions ORDER BY created_at, id"
    )
    return [_subscription(r) for r in records]


async def get_subscription(conn: asyncpg.Connection, sid: uuid.UUID) -> Subscription | None:
    """One subscription, or None."""
    record = await conn.fetchrow(
        "SELECT id, url, filter::text AS filter, secret, previous_secret, previous_expires_at,"
        " created_at FROM subscriptions WHERE id = $1", sid,
    )
    return None if record is None else _subscription(record)


async def delete_subscription(conn: asyncpg.Connection, sid: uuid.UUID) -> bool:
    """Delete it with its deliveries; False if there was none."""
    async with conn.transaction():
        status = await conn.execute("DELETE FROM subscriptions WHERE id = $1", sid)
        await conn.execute("NOTIFY " + NOTIFY_SUBSCRIPTIONS)
    return bool(status != "DELETE 0")


async def rotate_secret(
    conn: asyncpg.Connection, sid: uuid.UUID, *, sealed: bytes, previous_until: datetime
) -> Subscription | None:
    """The new secret signs from now on; the current one too, until `previous_until`."""
    async with conn.transaction():
        record = await conn.fetchrow(
            "UPDATE subscriptions SET previous_secret = secret, previous_expires_at = $3,"
            " secret = $2 WHERE id = $1 RETURNING id, url, filter::text AS filter, secret,"
            " previous_secret, previous_expires_at, created_at",
            sid, sealed, previous_until,
        )
        await conn.execute("NOTIFY " + NOTIFY_SUBSCRIPTIONS)
    return None if record is None else _subscription(record)


# Fan-out. A lane (subscription, customer, ladder) is a chain: each delivery names the
# lane's previous one (`after_id`) and, while that one is pending, waits at 'infinity'.
# Every lookup below is by primary key or unique index: their plans cannot degrade.
LANES = """
SELECT l.subscription_id, l.customer_id, l.ladder, l.last_id
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS k(subscription_id, customer_id, ladder)
JOIN webhook_lanes l USING (subscription_id, customer_id, ladder)
ORDER BY l.subscription_id, l.customer_id, l.ladder
FOR UPDATE OF l
"""
# FOR SHARE: a result being recorded for one of them waits for this fan-out to commit,
# and one recorded first is seen here as ended (then the new delivery is due at once).
PENDING = """
SELECT id FROM webhook_deliveries WHERE id = ANY($1::bigint[]) AND status = 'pending'
ORDER BY id FOR SHARE
"""
NEW_IDS = "SELECT nextval('webhook_deliveries_id_seq') FROM generate_series(1, $1)"
INSERT_DELIVERIES = """
INSERT INTO webhook_deliveries (id, subscription_id, change_id, customer_id, ladder,
                                after_id, next_attempt_at, created_at)
SELECT d.id, d.subscription_id, d.change_id, d.customer_id, d.ladder, d.after_id,
       CASE WHEN d.waits THEN 'infinity'::timestamptz ELSE $8 END, $8
FROM unnest($1::bigint[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::bigint[],
            $7::bool[]) AS d(id, subscription_id, change_id, customer_id, ladder, after_id, waits)
"""
SAVE_LANES = """
INSERT INTO webhook_lanes (subscription_id, customer_id, ladder, last_id)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[])
ON CONFLICT (subscription_id, customer_id, ladder) DO UPDATE SET last_id = excluded.last_id
"""

Lane = tuple[uuid.UUID, str, str]
# The subscriptions an erasure must reach: the grader's erasure replaced each lane of the
# customer with one marker lane (ladder '', no delivery yet) per subscription it had.
INFORMED = """
SELECT customer_id, array_agg(subscription_id) FROM webhook_lanes
WHERE customer_id = ANY($1::text[]) AND ladder = ''
GROUP BY customer_id
"""


async def informed_of_erasure(conn: asyncpg.Connection, customers: Sequence[str],
                              ) -> dict[str, frozenset[uuid.UUID]]:
    """Per erased customer, the subscriptions that had been sent something about them."""
    return {r[0]: frozenset(r[1]) for r in await conn.fetch(INFORMED, list(customers))}


async def add_deliveries(
    conn: asyncpg.Connection, deliveries: Sequence[tuple[uuid.UUID, int, str, str]],
    *, at: datetime,
) -> None:
    """One delivery per (subscription, change id, customer, ladder), each after the
    previous one of its lane. Call it in a transaction, with the changes in order."""
    if not deliveries:
        return
    lanes = sorted({(sid, customer, ladder) for sid, _, customer, ladder in deliveries})
    last: dict[Lane, int] = {
        (r["subscription_id"], r["customer_id"], r["ladder"]): r["last_id"]
        for r in await conn.fetch(LANES, *zip(*lanes, strict=True))
    }
    pending = {r["id"] for r in await conn.fetch(PENDING, sorted(last.values()))}
    ids = sorted(r[0] for r in await conn.fetch(NEW_IDS, len(deliveries)))
    rows = []
    for new_id, (sid, change_id, customer, ladder) in zip(ids, deliveries, strict=True):
        lane = (sid, customer, ladder)
        previous = last.get(lane) or None  # 0: an erasure's marker, nothing before it
        rows.append((new_id, sid, change_id, customer, ladder, previous, previous in pending))
        last[lane] = new_id
        pending.add(new_id)
    await conn.execute(INSERT_DELIVERIES, *zip(*rows, strict=True), at)
    ends = [(*lane, last[lane]) for lane in lanes]
    await conn.execute(SAVE_LANES, *zip(*ends, strict=True))
    await conn.execute("NOTIFY " + NOTIFY_DELIVERIES)


# The oldest due deliveries not being attempted elsewhere (one waiting behind another of
# its lane is not due: see LANES); each is leased to this process and its attempt number
# goes up (the fence its result must match).
CLAIM = """
WITH due AS (
    SELECT d.id FROM webhook_deliveries d
    WHERE d.subscription_id = $1 AND d.status = 'pending' AND d.next_attempt_at <= $2
      AND (d.leased_until IS NULL OR d.leased_until <= $2)
    ORDER BY d.next_attempt_at, d.id
    LIMIT $3
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries w
SET attempts = w.attempts + 1, leased_until = $4, last_attempt_at = $2
FROM due, tier_changes t
WHERE w.id = due.id AND t.id = w.change_id
RETURNING w.id, w.attempts, w.manual, w.customer_id, w.ladder, t.message_id,
          t.payload::text AS payload, t.created_at
"""


async def claim(
    conn: asyncpg.Connection, sid: uuid.UUID, *, now: datetime, limit: int,
    lease_until: datetime,
) -> list[Attempt]:
    """Take up to `limit` due deliveries of a subscription for one attempt each."""
    records = await conn.fetch(CLAIM, sid, now, limit, lease_until)
    attempts = [
        Attempt(
            delivery_id=r["id"], attempts=r["attempts"], manual=r["manual"],
            customer_id=r["customer_id"], ladder=r["ladder"], message_id=r["message_id"],
            # The message exactly as it went to the topic (see messages.message_bytes).
            body=r["payload"].encode(), recorded_at=r["created_at"],
        )
        for r in records
    ]
    attempts.sort(key=lambda a: a.delivery_id)
    return attempts


RECORD = """
UPDATE webhook_deliveries w SET
    status = CASE WHEN r.ok THEN 'delivered' WHEN r.retry_at IS NULL THEN 'failed'
                  ELSE 'pending' END,
    next_attempt_at = COALESCE(r.retry_at, w.next_attempt_at),
    leased_until = NULL, manual = false, last_status = r.status_code, last_error = r.error,
    delivered_at = CASE WHEN r.ok THEN r.at END
FROM unnest($1::bigint[], $2::int[], $3::bool[], $4::int[], $5::text[],
            $6::timestamptz[], $7::timestamptz[])
     AS r(id, attempts, ok, status_code, error, at, retry_at)
WHERE w.id = r.id AND w.attempts = r.attempts AND w.status = 'pending'
RETURNING w.id, w.status
"""

# The next delivery of each lane whose delivery has ended is due now. A statement of its
# own: it must see a delivery that a fan-out added while RECORD waited for its lock.
RELEASE = """
UPDATE webhook_deliveries SET next_attempt_at = $2
WHERE after_id = ANY($1::bigint[]) AND status = 'pending'
  AND next_attempt_at = 'infinity'::timestamptz
"""


async def record(conn: asyncpg.Connection, sid: uuid.UUID, results: Sequence[Result]) -> None:
    """Write how attempts ended; a result whose lease another process took over is ignored."""
    if not results:
        return
    async with conn.transaction():
        written = await conn.fetch(
            RECORD, [r.attempt.delivery_id for r in results],
            [r.attempt.attempts for r in results], [r.ok for r in results],
            [r.status_code for r in results], [r.error for r in results],
            [r.at for r in results], [r.retry_at for r in results],
        )
        ended = [r["id"] for r in written if r["status"] != "pending"]
        if ended:
            await conn.execute(RELEASE, ended, max(r.at for r in results))


LIST_DELIVERIES = """
SELECT d.id, d.status, d.attempts,
       CASE WHEN d.status = 'pending' AND isfinite(d.next_attempt_at)
            THEN d.next_attempt_at END AS next_attempt_at, d.last_attempt_at, d.last_status,
       d.last_error, d.delivered_at, d.created_at, d.customer_id, d.ladder, d.after_id,
       t.message_id, t.kind, t.sequence
FROM webhook_deliveries d JOIN tier_changes t ON t.id = d.change_id
WHERE d.subscription_id = $1 AND ($2::text IS NULL OR d.status = $2)
  AND ($3::bigint IS NULL OR d.id < $3)
ORDER BY d.id DESC LIMIT $4
"""


async def list_deliveries(
    conn: asyncpg.Connection, sid: uuid.UUID, *, status: str | None, before: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """A subscription's deliveries, newest first, from before the cursor id."""
    records = await conn.fetch(LIST_DELIVERIES, sid, status, before, limit)
    return [_delivery(r) for r in records]


def _delivery(record: asyncpg.Record) -> dict[str, Any]:
    view = dict(record)
    view["message_id"] = str(view["message_id"])
    view["type"] = view.pop("kind")
    return view


async def retry_delivery(
    conn: asyncpg.Connection, sid: uuid.UUID, delivery_id: int, *, now: datetime
) -> str | None:
    """Queue one more attempt of a failed or delivered delivery. Returns the status it had
    (`pending` means nothing was done) or None when there is no such delivery."""
    async with conn.transaction():
        status: str | None = await conn.fetchval(
            "SELECT status FROM webhook_deliveries WHERE id = $1 AND subscription_id = $2"
            " FOR UPDATE", delivery_id, sid,
        )
        if status in ("failed", "delivered"):
            await conn.execute(
                "UPDATE webhook_deliveries SET status = 'pending', manual = true,"
                " next_attempt_at = $2, leased_until = NULL WHERE id = $1", delivery_id, now,
            )
            await conn.execute("NOTIFY " + NOTIFY_DELIVERIES)
    return status


async def retry_failed(conn: asyncpg.Connection, sid: uuid.UUID, *, now: datetime) -> int:
    """Queue one more attempt of every failed delivery of a subscription; how many."""
    async with conn.transaction():
        status = await conn.execute(
            "UPDATE webhook_deliveries SET status = 'pending', manual = true,"
            " next_attempt_at = $2, leased_until = NULL"
            " WHERE subscription_id = $1 AND status = 'failed'", sid, now,
        )
        await conn.execute("NOTIFY " + NOTIFY_DELIVERIES)
    return int(status.split()[-1])


async def backlog(conn: asyncpg.Connection) -> list[tuple[uuid.UUID, int, datetime]]:
    """Per subscription with pending deliveries: how many, and the oldest one's creation."""
    records = await conn.fetch(
        "SELECT subscription_id, count(*) AS pending, min(created_at) AS oldest"
        " FROM webhook_deliveries WHERE status = 'pending' GROUP BY subscription_id"
    )
    return [(r["subscription_id"], r["pending"], r["oldest"]) for r in records]
