"""`tierflow up`'s drain on the way down, decided on facts: the grader's committed positions
in PostgreSQL against each partition's end on the broker, and the unsent outbox."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from pydantic import SecretStr
from sqlalchemy import insert

from services.cli.drain import drain
from shared.db.engine import asyncpg_dsn, make_engine
from shared.db.tables import tier_changes
from shared.kafka import ensure_topics
from shared.settings import CommonSettings
from tests.integration.test_notifier_support import change
from tests.support import migrated_database, unique

pytestmark = pytest.mark.integration


@pytest.fixture
async def own_database(pg_url: str) -> AsyncIterator[str]:
    """A database of its own: the outbox count is the whole database's."""
    async with migrated_database(pg_url, "drain") as url:
        yield url


@pytest.fixture
async def settings(own_database: str, broker: str) -> CommonSettings:
    """Two partitions holding 3 and 2 accepted events."""
    topic = unique("drain-events")
    settings = CommonSettings(database_url=SecretStr(own_database), kafka_bootstrap=broker,
                              topic_events=topic)
    await ensure_topics(settings, [NewTopic(topic, 2, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        for partition, count in ((0, 3), (1, 2)):
            for i in range(count):
                await producer.send_and_wait(topic, f"event {i}".encode(), partition=partition)
    finally:
        await producer.stop()
    return settings


async def graded_up_to(settings: CommonSettings, **positions: int) -> None:
    """Positions as the grader commits them: `p0=3` means partition 0 is graded to offset 3."""
    conn = await asyncpg.connect(asyncpg_dsn(settings.database_url.get_secret_value()))
    try:
        await conn.executemany(
            "INSERT INTO consumer_offsets (topic, partition, next_offset) VALUES ($1, $2, $3)"
            " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
            [(settings.topic_events, int(p[1:]), n) for p, n in positions.items()])
    finally:
        await conn.close()


async def test_drained_once_every_partition_is_graded_to_its_end(
    settings: CommonSettings
) -> None:
    await graded_up_to(settings, p0=3, p1=2)
    said: list[str] = []
    assert await drain(settings, within=10, wait=True, forced=lambda: False, out=said.append,
                       memory_broker=True)
    assert said == ["drained: every accepted event is graded and every tier change is sent"]


async def test_waits_while_the_grader_catches_up(settings: CommonSettings) -> None:
    await graded_up_to(settings, p0=3, p1=0)
    said: list[str] = []
    draining = asyncio.create_task(drain(settings, within=30, wait=True,
                                         forced=lambda: False, out=said.append,
                                         memory_broker=True))
    deadline = time.monotonic() + 10
    while not said and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert said == ["draining: 2 events to grade, 0 tier changes to send"]
    assert not draining.done()
    await graded_up_to(settings, p1=2)
    assert await asyncio.wait_for(draining, 10)
    assert said[-1].startswith("drained")


async def test_gives_up_at_the_deadline_and_says_what_is_at_risk(
    settings: CommonSettings
) -> None:
    # Partition 1 was never graded at all: no position is stored for it (the lag gauge
    # the old drain read did not exist in that state, and counted as 0).
    await graded_up_to(settings, p0=2)
    engine = make_engine(settings.database_url.get_secret_value())
    try:
        async with engine.begin() as conn:  # a tier change the notifier has not sent
            await conn.execute(insert(tier_changes), [change(unique("drain"), "value", 1)])
    finally:
        await engine.dispose()
    said: list[str] = []
    started = time.monotonic()
    assert not await drain(settings, within=1.0, wait=True, forced=lambda: False,
                           out=said.append, memory_broker=True)
    assert time.monotonic() - started < 8
    assert said[-1] == (
        "stopping without draining: 3 accepted events not graded (partition 0: 1, "
        "partition 1: 2); lost: the embedded broker keeps them in memory only; 1 tier "
        "changes not sent yet (they stay in the database and go out at the next start)")


async def test_a_service_down_reports_at_once(settings: CommonSettings) -> None:
    said: list[str] = []
    started = time.monotonic()
    assert not await drain(settings, within=30, wait=False, forced=lambda: False,
                           out=said.append, memory_broker=False)
    assert time.monotonic() - started < 8
    assert said == ["stopping without draining: 5 accepted events not graded (partition 0: "
                    "3, partition 1: 2); graded at the next start (they stay on the broker)"]
