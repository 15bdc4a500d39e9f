"""The dedupe window: an event_id seen again within TIERFLOW_DEDUPE_DAYS (from when it was
first seen) changes nothing; after it, the id counts as new, and old ids are pruned."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from services.grader import repository as repo
from services.grader.app import create_app
from shared.db.engine import connect
from shared.kafka import ensure_topics
from tests.integration.grader_support import grader_settings, produce, purchase, running
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


async def test_a_repeat_within_the_window_changes_nothing_and_after_it_counts_again(
    migrated_pg: str, broker: str
) -> None:
    now = datetime.now(UTC)
    clock = [now]
    settings = grader_settings(migrated_pg, broker, dedupe_days=30)
    await ensure_topics(settings)
    customer = unique("c")
    event = purchase(customer, "10.00")
    await produce(broker, settings.topic_events, [event])
    async with running(create_app(settings, clock=lambda: clock[0])) as client:

        def orders(expected: int) -> Callable[[], Awaitable[None]]:
            async def check() -> None:
                body = (await client.get(f"/v1/customers/{customer}")).json()
                assert body.get("metrics", {}).get("orders_total") == expected

            return check

        await eventually(orders(1), timeout=20)
        clock[0] = now + timedelta(days=29)  # inside the window: a repeat
        await produce(broker, settings.topic_events, [event, purchase(customer, "1.00")])
        await eventually(orders(2), timeout=20)
        clock[0] = now + timedelta(days=31)  # past it: the same id is a new event
        await produce(broker, settings.topic_events, [event])
        await eventually(orders(3), timeout=20)


async def test_ids_first_seen_before_the_window_are_pruned(migrated_pg: str) -> None:
    conn = await connect(migrated_pg)
    try:
        old, recent = unique("old"), unique("recent")
        today = datetime.now(UTC).date()
        await conn.executemany(
            "INSERT INTO processed_events (event_hash, seen_on) VALUES ($1::uuid, $2)",
            [(repo.event_hash(old), today - timedelta(days=40)),
             (repo.event_hash(recent), today)])
        before = today - timedelta(days=30)
        while await repo.prune_seen(conn, before=before, limit=1000) == 1000:
            pass
        old_key, recent_key = repo.event_hash(old), repo.event_hash(recent)
        seen = await repo.seen_events(conn, [old_key, recent_key], since=before)
        assert seen.within == {recent_key} and seen.expired == set()
    finally:
        await conn.close()
