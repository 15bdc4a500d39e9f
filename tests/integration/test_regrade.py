"""Time alone re-grades a customer: nobody has to buy anything to become churned. The
consumer that owns the customer does it on the day the schedule named, with a clock the
test moves on; a customer of the same partition who is not due is not touched."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
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


async def test_a_grace_period_starts_then_completes_or_is_cancelled_by_time_alone(
    migrated_pg: str, broker: str, engine: AsyncEngine
) -> None:
    """The default `tier` ladder: important from 10,000 spent in 365 days, staying while
    8,000, 30 days' grace. Nobody sends an event after the first ones: windows drop them."""
    now = datetime.now(UTC)
    clock = [now]
    settings = grader_settings(migrated_pg, broker)
    await ensure_topics(settings)
    falls, recovers = unique("falls"), unique("recovers")

    def ago(days: int) -> datetime:
        return now - timedelta(days=days)

    refund = {"event_id": unique("ev"), "type": "refund", "customer_id": recovers,
              "occurred_at": ago(290).isoformat(),
              "data": {"amount": "4000.00", "currency": "CNY"}}
    await produce(broker, settings.topic_events, [
        purchase(falls, "12000.00", when=ago(300)),
        # 14,000 now; 5,000 once the first purchase leaves the year (a fall below 8,000);
        # 9,000 ten days later, when the refund leaves it too (back above 8,000).
        purchase(recovers, "9000.00", when=ago(300)), purchase(recovers, "9000.00", when=ago(100)),
        refund])
    leaves = ago(300).date() + timedelta(days=365)  # the first purchase leaves the window

    async def tier_messages(who: str) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            t = tier_changes.c
            return [row.payload for row in (await conn.execute(
                select(t.payload).where(t.customer_id == who, t.ladder == "tier")
                .order_by(t.id))).all()]

    def day(d: date) -> datetime:
        return datetime(d.year, d.month, d.day, 1, tzinfo=UTC)

    def due_on(who: str, expected: date) -> Callable[[], Awaitable[None]]:
        async def check() -> None:
            row = await stored_row(engine, who)
            assert row is not None and row[1] == expected, row
        return check

    def scheduled(who: str) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
        async def check() -> list[dict[str, Any]]:
            messages = await tier_messages(who)
            assert [m["type"] for m in messages] == ["tier.changed", "tier.downgrade_scheduled"]
            return messages
        return check

    async with running(create_app(settings, clock=lambda: clock[0])) as client:
        for who in (falls, recovers):
            await eventually(due_on(who, now.date() + timedelta(days=1)), timeout=20)
        clock[0] = now + timedelta(days=1)  # that re-grade works out the exact day
        for who in (falls, recovers):
            await eventually(due_on(who, leaves), timeout=20)

        clock[0] = day(leaves)  # both fall below 8,000: a downgrade waits 30 days

        for who in (falls, recovers):
            notice = (await eventually(scheduled(who), timeout=20))[1]
            assert (notice["from_tier"], notice["to_tier"], notice["reason"]) == (
                "important", "regular", "schedule")
            assert notice["effective_at"].startswith(
                (leaves + timedelta(days=30)).isoformat())

        clock[0] = day(leaves + timedelta(days=10))  # the refund leaves: 9,000, recovered

        async def recovered() -> None:
            body = (await client.get(f"/v1/customers/{recovers}")).json()["tiers"]["tier"]
            assert (body["tier"], body["computed"], body["pending_downgrade"]) == (
                "important", "important", None)

        await eventually(recovered, timeout=20)
        # Its next day is on another ladder: 180 days without activity (lifecycle).
        await eventually(due_on(recovers, ago(100).date() + timedelta(days=180)), timeout=20)

        clock[0] = day(leaves + timedelta(days=30))  # the grace period ends

        async def downgraded() -> list[dict[str, Any]]:
            messages = await tier_messages(falls)
            assert len(messages) == 3
            return messages

        last = (await eventually(downgraded, timeout=20))[-1]
    assert (last["type"], last["from_tier"], last["to_tier"], last["reason"],
            last["direction"], last["sequence"]) == (
        "tier.changed", "important", "regular", "schedule", "down", 3)
    assert [m["type"] for m in await tier_messages(recovers)] == [
        "tier.changed", "tier.downgrade_scheduled"]  # a recovery sends nothing
