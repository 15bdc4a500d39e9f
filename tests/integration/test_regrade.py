"""Time alone re-grades a customer: nobody has to buy anything to become churned. The
consumer that owns the customer does it on the day the schedule named, with a clock the
test moves on; a customer of the same partition who is not due is not touched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.grader.app import create_app
from services.grader.routing import owner_partition
from shared.db.tables import customers, tier_changes
from shared.kafka import ensure_topics
from tests.integration.grader_support import grader_settings, produce, purchase, running
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


async def test_days_passing_make_a_quiet_customer_churned(
    migrated_pg: str, broker: str, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    clock = [now]
    settings = grader_settings(migrated_pg, broker)
    await ensure_topics(settings)
    customer = unique("quiet")
    # A regular customer on the same partition, active yesterday: due in 179 days.
    partition = owner_partition(customer, settings.events_partitions)
    neighbour = next(c for c in (unique("busy") for _ in range(10_000))
                     if owner_partition(c, settings.events_partitions) == partition)
    await produce(broker, settings.topic_events,
                  [purchase(customer, "80.00", when=now - timedelta(days=178)),
                   purchase(neighbour, "80.00", when=now - timedelta(days=1))])

    async def stored(who: str) -> Any:
        return await stored_row(engine, who)

    async def lifecycle() -> list[Any]:
        async with engine.connect() as conn:
            t = tier_changes.c
            return list((await conn.execute(
                select(t.sequence, t.payload)
                .where(t.customer_id == customer, t.ladder == "lifecycle").order_by(t.id))).all())

    async with running(create_app(settings, clock=lambda: clock[0])):

        async def graded() -> None:
            assert len(await lifecycle()) == 1
            assert await stored(neighbour) is not None

        await eventually(graded, timeout=20)
        # Graded because of events: due the next day, whose re-grade works out the day.
        tomorrow = now + timedelta(days=1)
        assert (await stored(customer))[1] == (await stored(neighbour))[1] == tomorrow.date()
        clock[0] = tomorrow

        async def scheduled() -> None:
            # new while days_since_last_activity < 180: due the day it reaches 180.
            assert await stored(customer) is not None
            assert (await stored(customer))[:2] == (
                tomorrow.date(), (now - timedelta(days=178)).date() + timedelta(180))
            assert (await stored(neighbour))[:2] == (
                tomorrow.date(), (now - timedelta(days=1)).date() + timedelta(180))

        await eventually(scheduled, timeout=20)
        assert len(await lifecycle()) == 1  # that re-grade changed nothing
        neighbour_before = await stored(neighbour)
        clock[0] = now + timedelta(days=3)  # no new event: only the days pass

        async def churned() -> list[Any]:
            rows = await lifecycle()
            assert len(rows) == 2
            return rows

        rows = await eventually(churned, timeout=20)
    assert [(r.payload["from_tier"], r.payload["to_tier"]) for r in rows] == [
        (None, "new"), ("new", "churned")]
    last = rows[-1].payload
    assert (last["reason"], last["direction"], last["sequence"]) == ("schedule", "down", 2)
    assert last["cause_event_id"] is None
    assert last["metrics"]["days_since_last_activity"] == 181
    assert last["actions"] == ["winback_campaign"]
    assert (await stored(customer))[0] == clock[0].date()
    # Committed in the same chunk as the churn if the sweep had read it: it did not.
    assert await stored(neighbour) == neighbour_before


async def stored_row(engine: AsyncEngine, customer: str) -> Any:
    """(graded_on, due_on, updated_at) of a customer's row."""
    c = customers.c
    async with engine.connect() as conn:
        return (await conn.execute(select(c.graded_on, c.due_on, c.updated_at)
                                   .where(c.customer_id == customer))).one_or_none()
