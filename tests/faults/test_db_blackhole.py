"""A database connection that goes silent (a blackhole: no RST, no FIN, nothing): every
wait on it ends within its bound, and the relay's leadership moves to a live notifier
within the lease (docs/operations.md#database-connections)."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.relay import LOCK_KEY, LOCK_RETRY_S, TRY_LOCK
from shared.db.engine import Timeouts, close, connect, create_pool
from shared.settings import GraderSettings
from tests.faults.blackhole import Blackhole
from tests.integration.test_notifier_support import (
    RunningRelay,
    consume_mine,
    create_topic,
    notifier_settings,
    record_changes,
)
from tests.support import eventually, unique

pytestmark = pytest.mark.integration

# Short, but not so short that a busy machine alone breaks it: the relay's commands are
# capped at half the lease, and a 0.5 s cap timed out on a loaded 2-core box.
LEASE_S = 2.0
# What a test allows beyond a stated bound: scheduling on a busy machine.
SLACK_S = 1.5


async def test_leadership_moves_to_a_live_notifier_when_the_leaders_link_is_blackholed(
    engine: AsyncEngine, migrated_pg: str, broker: str
) -> None:
    old_topic, new_topic = unique("tier-changes"), unique("tier-changes")
    await create_topic(broker, old_topic)
    await create_topic(broker, new_topic)
    customers = [unique("c")]
    short = {"relay_lease_s": LEASE_S, "db_connect_timeout_s": 0.5, "db_dead_peer_s": 2}
    async with Blackhole(migrated_pg).running() as link:
        leader = RunningRelay(notifier_settings(link.url, broker, old_topic, **short))
        other = RunningRelay(notifier_settings(migrated_pg, broker, new_topic, **short))
        async with leader.running():
            await eventually(leader.is_leader)
            async with other.running():
                # The other relay is up and waiting for the lock.
                await eventually(lambda: other_waits(other))
                link.swallow()
                cut = time.monotonic()
                rows = await record_changes(engine, customers, range(1, 3))
                await eventually(other.is_leader, timeout=LEASE_S * 10)
                moved = time.monotonic() - cut
                # The stated bound: the lease, then the other's next try for the lock.
                assert moved < LEASE_S + min(LOCK_RETRY_S, LEASE_S / 4) + SLACK_S
                received = await consume_mine(broker, new_topic, customers, len(rows))
                assert {dict(m.headers)["tierflow-message-id"].decode() for m in received} \
                    == {str(r["message_id"]) for r in rows}
                # The old leader noticed too, and does not claim to lead.
                await eventually(lambda: not_leader(leader), timeout=LEASE_S * 5)


async def test_leadership_moves_when_the_leaders_server_is_stuck_sending(
    engine: AsyncEngine, migrated_pg: str, broker: str
) -> None:
    """The leader's replies stop arriving while its server sends a result larger than the
    socket buffers: PostgreSQL's own timeouts do not end a session stuck writing, so the
    waiting relay ends it once it has been stuck for the lease, and leads."""
    topic = unique("tier-changes")
    await create_topic(broker, topic)
    short = {"relay_lease_s": LEASE_S, "db_connect_timeout_s": 0.5, "db_dead_peer_s": 2}
    async with Blackhole(migrated_pg).running() as link:
        holder = await connect(link.url)  # no command bound: a leader mid-command
        sending: asyncio.Future[object] | None = None
        try:
            assert await holder.fetchval(TRY_LOCK, LOCK_KEY)
            link.hold_replies()
            started = time.monotonic()
            # Simple protocol: the query goes out in one message, the rows come back.
            sending = asyncio.ensure_future(holder.execute("SELECT repeat('x', 20000000)"))
            await eventually(lambda: stuck_writing(engine, holder.get_server_pid()))
            other = RunningRelay(notifier_settings(migrated_pg, broker, topic, **short))
            async with other.running():
                await eventually(other.is_leader, timeout=LEASE_S * 10)
                moved = time.monotonic() - started
                assert moved < LEASE_S + min(LOCK_RETRY_S, LEASE_S / 4) + SLACK_S
        finally:
            holder.terminate()
            if sending is not None:
                await asyncio.gather(sending, return_exceptions=True)


async def stuck_writing(engine: AsyncEngine, pid: int) -> None:
    query = text("SELECT state, wait_event FROM pg_stat_activity WHERE pid = :pid")
    async with engine.connect() as conn:
        row = (await conn.execute(query, {"pid": pid})).one()
    assert tuple(row) == ("active", "ClientWrite")


async def other_waits(relay: RunningRelay) -> None:
    assert relay.sample("tierflow_notifier_is_leader") == 0
    assert relay.registry.get_sample_value("tierflow_notifier_outbox_backlog") is not None


async def not_leader(relay: RunningRelay) -> None:
    assert relay.sample("tierflow_notifier_is_leader") == 0


async def test_a_query_on_a_blackholed_connection_fails_within_its_bound(
    migrated_pg: str,
) -> None:
    """The grader's consume loop: its command bound ends the wait, and closing the dead
    connection does not hang either."""
    settings = GraderSettings(db_consumer_timeout_s=0.5, db_dead_peer_s=2)
    timeouts = Timeouts.of(settings, query_s=settings.db_consumer_timeout_s)
    async with Blackhole(migrated_pg).running() as link:
        conn = await connect(link.url, timeouts=timeouts)
        assert await conn.fetchval("SELECT 1") == 1
        link.swallow()
        started = time.monotonic()
        async with asyncio.timeout(10):  # the test's own guard: a hang fails, not blocks
            with pytest.raises(TimeoutError):
                await conn.fetchval("SELECT 1")
            assert time.monotonic() - started < 0.5 + SLACK_S
            started = time.monotonic()
            await close(conn)
        assert time.monotonic() - started < 0.5 + SLACK_S
        assert conn.is_closed()


async def test_a_pool_on_a_blackholed_link_fails_within_its_bounds(migrated_pg: str) -> None:
    """The API's pool: a query on a connection that went silent, and waiting for a new
    connection that never answers, both end within their bounds."""
    timeouts = Timeouts(connect_s=0.5, query_s=0.5, dead_peer_s=2)
    async with Blackhole(migrated_pg).running() as link:
        pool = await create_pool(link.url, timeouts, min_size=1, max_size=1)
        try:
            assert await pool.fetchval("SELECT 1") == 1
            link.swallow()
            async with asyncio.timeout(10):  # the test's own guard
                started = time.monotonic()
                with pytest.raises(TimeoutError):
                    await pool.fetchval("SELECT 1")
                assert time.monotonic() - started < 0.5 + SLACK_S
                # The dead connection is gone; a new one cannot be made in time.
                started = time.monotonic()
                with pytest.raises((TimeoutError, asyncpg.InterfaceError)):
                    await pool.fetchval("SELECT 1")
                assert time.monotonic() - started < 1.0 + SLACK_S
        finally:
            pool.terminate()
