"""Two graders in one consumer group, the second joining mid-stream (a rebalance while
batches are in flight), and some customers' events published under the wrong key: those
are re-routed to the partition that owns the customer, so each customer still has one
writer, and the state equals a recomputation."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.kafka import ensure_topics
from shared.settings import GraderSettings
from tests.faults.history import (
    applied_offsets,
    assert_state_equals_recomputation,
    grader_service,
    history,
)
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


async def produce_miskeyed(broker: str, topic: str, events: list[dict[str, object]],
                           rng: random.Random) -> None:
    """Most events keyed by customer; one in ten under a random key (another partition)."""
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    try:
        for event in events:
            key = str(event["customer_id"]) if rng.random() > 0.1 else unique("k")
            await producer.send(topic, orjson.dumps(event), key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def event_counts(url: str) -> dict[str, float]:
    """`tierflow_grader_events_total` of one grader, by outcome."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{url}/metrics")).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tierflow_grader_events_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = float(line.rsplit(" ", 1)[1])
    return counts


async def test_second_grader_joining_mid_stream_changes_nothing(
    migrated_pg: str, broker: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    prefix, topic, group = unique("rebal"), unique("events"), unique("grader")
    await ensure_topics(GraderSettings(kafka_bootstrap=broker, topic_events=topic,
                                       events_partitions=3))
    rng = random.Random(11)
    events = history(prefix, rng)
    await produce_miskeyed(broker, topic, events, rng)
    # Small batches keep the first grader busy long enough for the second to join.
    first = grader_service(migrated_pg, broker, topic, group, tmp_path, name="grader-a", batch=10)
    second = grader_service(migrated_pg, broker, topic, group, tmp_path, name="grader-b", batch=10)
    try:
        first.start()

        async def started() -> None:
            assert first.proc is not None and first.proc.poll() is None, first.log_tail()
            assert await applied_offsets(engine, topic) >= len(events) // 5

        await eventually(started, timeout=60, interval=0.01)
        second.start()  # the group rebalances while the first is mid-stream

        async def all_applied() -> None:
            for grader in (first, second):
                assert grader.proc is not None and grader.proc.poll() is None, grader.log_tail()
            # Every message read: the events and the re-routed copies the graders produced.
            rerouted = sum([(await event_counts(g.url)).get("rerouted", 0)
                            for g in (first, second)])
            assert await applied_offsets(engine, topic) == len(events) + rerouted

        await second.ready(timeout=30)
        await eventually(all_applied, timeout=180, interval=0.1)
        counts = [await event_counts(grader.url) for grader in (first, second)]
        assert sum(counts[1].values()) > 0, \
            "the second grader never got a partition: no rebalance was tested"
        assert sum(c.get("rerouted", 0) for c in counts) > 0, "no event was re-routed"
    finally:
        first.stop()
        second.stop()
    await assert_state_equals_recomputation(engine, prefix, events)
