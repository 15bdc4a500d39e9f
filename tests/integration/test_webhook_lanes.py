"""A subscription's lanes in the database: each customer's deliveries on a ladder wait for
the one before them, and become due the moment it ends, delivered or failed for good."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.webhooks import store
from services.notifier.webhooks.filters import Filter
from shared.db.engine import KEYED_LOOKUPS, SERVER_SETTINGS, asyncpg_dsn
from shared.db.tables import tier_changes
from tests.integration.test_notifier_support import change

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LEASE = NOW + timedelta(seconds=40)
WAITING = None  # behind the one before it, not due until that one ends


@pytest.fixture
async def conn(migrated_pg: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(
        asyncpg_dsn(migrated_pg), server_settings={**SERVER_SETTINGS, **KEYED_LOOKUPS})
    yield connection
    await connection.close()


@pytest.fixture
async def sid(conn: asyncpg.Connection) -> AsyncIterator[uuid.UUID]:
    subscription = await store.create_subscription(
        conn, url="http://127.0.0.1:9/hook", filter_=Filter(), sealed=b"sealed", at=NOW)
    yield subscription.id
    await store.delete_subscription(conn, subscription.id)


async def changes(engine: AsyncEngine, *keys: tuple[str, str, int]) -> list[int]:
    """Record tier changes (customer, ladder, sequence); their ids in order."""
    async with engine.begin() as conn:
        rows = [change(*key) for key in keys]
        result = await conn.execute(insert(tier_changes).returning(tier_changes.c.id), rows)
        return list(result.scalars())


async def fan_out(conn: asyncpg.Connection, sid: uuid.UUID, ids: list[int],
                  keys: list[tuple[str, str]]) -> None:
    async with conn.transaction():
        await store.add_deliveries(
            conn, [(sid, i, c, ladder) for i, (c, ladder) in zip(ids, keys, strict=True)],
            at=NOW)


async def due(conn: asyncpg.Connection, sid: uuid.UUID) -> dict[int, datetime | None]:
    """change id -> next attempt of each pending delivery."""
    rows = await conn.fetch(
        "SELECT change_id, CASE WHEN isfinite(next_attempt_at) THEN next_attempt_at END"
        " AS next_attempt_at FROM webhook_deliveries"
        " WHERE subscription_id = $1 AND status = 'pending'", sid)
    return {r["change_id"]: r["next_attempt_at"] for r in rows}


def ended(attempt: store.Attempt, *, ok: bool, retry_at: datetime | None = None,
          at: datetime = NOW) -> store.Result:
    return store.Result(attempt, ok=ok, status_code=200 if ok else 500, error=None, at=at,
                        retry_at=retry_at)


async def test_a_lane_goes_one_at_a_time_and_moves_on_when_one_ends(
    engine: AsyncEngine, conn: asyncpg.Connection, sid: uuid.UUID
) -> None:
    a, b = f"lane-a-{uuid.uuid4().hex[:8]}", f"lane-b-{uuid.uuid4().hex[:8]}"
    keys = [(a, "value"), (a, "value"), (b, "value"), (a, "value"), (a, "loyalty")]
    first, second, other, third, ladder = await changes(
        engine, *[(c, ladder, n) for n, (c, ladder) in enumerate(keys, start=1)])
    await fan_out(conn, sid, [first, second, other, third, ladder], keys)

    # Only the first of each lane is due: another customer, another ladder go at once.
    assert await due(conn, sid) == {first: NOW, second: WAITING, other: NOW, third: WAITING,
                                    ladder: NOW}
    claimed = await store.claim(conn, sid, now=NOW, limit=10, lease_until=LEASE)
    assert {c.delivery_id for c in claimed} == set(
        await conn.fetchval("SELECT array_agg(id) FROM webhook_deliveries"
                            " WHERE change_id = ANY($1)", [first, other, ladder]))
    by_change = {await conn.fetchval("SELECT change_id FROM webhook_deliveries WHERE id = $1",
                                     c.delivery_id): c for c in claimed}

    # A retry keeps the lane waiting behind it.
    retry_at = NOW + timedelta(seconds=5)
    await store.record(conn, sid, [ended(by_change[first], ok=False, retry_at=retry_at)])
    assert (await due(conn, sid))[second] == WAITING

    # Failed for good: the next one is due when the failure was recorded; delivered: too.
    [again] = await store.claim(conn, sid, now=retry_at, limit=10, lease_until=LEASE)
    later = retry_at + timedelta(seconds=1)
    await store.record(conn, sid, [ended(again, ok=False, at=later)])
    assert (await due(conn, sid))[second] == later
    [following] = await store.claim(conn, sid, now=later, limit=10, lease_until=LEASE)
    await store.record(conn, sid, [ended(following, ok=True, at=later)])
    assert (await due(conn, sid))[third] == later

    # A new change in a lane whose last delivery has ended is due at once.
    [fourth] = await changes(engine, (b, "value", 9))
    await store.record(conn, sid, [ended(by_change[other], ok=True)])
    await fan_out(conn, sid, [fourth], [(b, "value")])
    assert (await due(conn, sid))[fourth] == NOW


async def test_a_result_recorded_during_a_fan_out_releases_what_the_fan_out_added(
    engine: AsyncEngine, conn: asyncpg.Connection, sid: uuid.UUID, migrated_pg: str
) -> None:
    customer = f"lane-race-{uuid.uuid4().hex[:8]}"
    first, second = await changes(engine, (customer, "value", 1), (customer, "value", 2))
    await fan_out(conn, sid, [first], [(customer, "value")])
    [attempt] = await store.claim(conn, sid, now=NOW, limit=1, lease_until=LEASE)

    # The fan-out of the second change holds the first delivery (pending) while the
    # first's success is being recorded on another connection.
    other = await asyncpg.connect(asyncpg_dsn(migrated_pg))
    try:
        async with conn.transaction():
            await store.add_deliveries(conn, [(sid, second, customer, "value")], at=NOW)
            recording = asyncio.create_task(
                store.record(other, sid, [ended(attempt, ok=True)]))
            await until_waiting_for_a_lock(engine, other.get_server_pid())
        await asyncio.wait_for(recording, 10)
    finally:
        await other.close()
    assert await due(conn, sid) == {second: NOW}


async def until_waiting_for_a_lock(engine: AsyncEngine, pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        async with engine.connect() as watcher:
            waiting = await watcher.scalar(text(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :pid"
            ), {"pid": pid})
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the result was never blocked by the fan-out")
