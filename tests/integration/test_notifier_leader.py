"""Only one relay at a time: the PostgreSQL advisory lock decides, and passes on loss."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.relay import LOCK_KEY
from tests.integration.test_notifier_support import (
    RunningRelay,
    consume_mine,
    create_topic,
    notifier_settings,
    record_changes,
    unsent_ids,
)
from tests.support import eventually, unique

pytestmark = pytest.mark.integration

# A bigint advisory key shows in pg_locks split into classid (high) and objid (low 32 bits).
LOCK_HOLDER = text(
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND classid = :high AND objid = :low AND objsubid = 1"
)


async def lock_holder(engine: AsyncEngine) -> int | None:
    """The backend pid holding the relay lock, if any."""
    params = {"high": LOCK_KEY >> 32, "low": LOCK_KEY & 0xFFFFFFFF}
    async with engine.connect() as conn:
        pid: int | None = (await conn.execute(LOCK_HOLDER, params)).scalar_one_or_none()
    return pid

async def test_second_relay_waits_while_the_first_holds_the_lock(
    engine: AsyncEngine, migrated_pg: str, broker: str
) -> None:
    first_topic, second_topic = unique("tier-changes"), unique("tier-changes")
    await create_topic(broker, first_topic)
    await create_topic(broker, second_topic)
    customers = [unique("c")]
    first = RunningRelay(notifier_settings(migrated_pg, broker, first_topic))
    second = RunningRelay(notifier_settings(migrated_pg, broker, second_topic))
    async with first.running():
        await eventually(first.is_leader)
        async with second.running():
            rows = await record_changes(engine, customers, range(1, 3))
            await consume_mine(broker, first_topic, customers, len(rows))

            async def marked_sent() -> None:
                assert await unsent_ids(engine, rows) == set()

            # Else the first may be stopped between ack and mark, and the second resend them.
            await eventually(marked_sent)
            assert second.sample("tierflow_notifier_is_leader") == 0
            assert second.sample("tierflow_notifier_messages_total",
                                 kind="tier.changed", outcome="sent") == 0
            # The first one stops (its connection closes, the lock goes): the second takes over.
            await first.stop()
            await eventually(second.is_leader, timeout=10)
            later = await record_changes(engine, customers, range(3, 4))
            received = await consume_mine(broker, second_topic, customers, len(later))
            assert {dict(m.headers)["tierflow-message-id"].decode() for m in received} == {
                str(r["message_id"]) for r in later
            }


async def test_relay_reacquires_the_lock_after_its_connection_dies(
    engine: AsyncEngine, migrated_pg: str, broker: str
) -> None:
    topic = unique("tier-changes")
    await create_topic(broker, topic)
    customers = [unique("c")]
    async with RunningRelay(notifier_settings(migrated_pg, broker, topic)).running() as relay:
        await eventually(relay.is_leader)
        killed = await lock_holder(engine)
        assert killed is not None
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed})

        async def held_again() -> None:
            assert await lock_holder(engine) not in (None, killed)
            await relay.is_leader()

        await eventually(held_again, timeout=10)
        rows = await record_changes(engine, customers, range(1, 3))
        received = await consume_mine(broker, topic, customers, len(rows))
        assert {dict(m.headers)["tierflow-message-id"].decode() for m in received} == {
            str(r["message_id"]) for r in rows
        }
