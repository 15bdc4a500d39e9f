"""Time alone re-grades a customer: nobody has to buy anything to become churned. The
consumer that owns the customer does it, with a clock the test moves three days on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.grader.app import create_app
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
    await produce(broker, settings.topic_events,
                  [purchase(customer, "80.00", when=now - timedelta(days=178))])

    async def lifecycle() -> list[Any]:
        async with engine.connect() as conn:
            t = tier_changes.c
            return list((await conn.execute(
                select(t.sequence, t.payload)
                .where(t.customer_id == customer, t.ladder == "lifecycle").order_by(t.id))).all())

    async with running(create_app(settings, clock=lambda: clock[0])):

        async def graded() -> None:
            assert len(await lifecycle()) == 1

        await eventually(graded, timeout=20)
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
    async with engine.connect() as conn:
        graded_on = await conn.scalar(
            select(customers.c.graded_on).where(customers.c.customer_id == customer))
    assert graded_on == clock[0].date()
