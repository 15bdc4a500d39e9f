"""Time alone re-grades a customer: nobody has to buy anything to become churned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.grader.handler import apply_batch, regrade_due
from services.grader.policies import PolicyCache
from shared.db.engine import raw
from shared.db.tables import customers, tier_changes
from shared.events import parse_event_obj
from tests.integration.grader_support import purchase
from tests.support import unique

pytestmark = pytest.mark.integration


async def test_days_passing_make_a_quiet_customer_churned(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    customer = unique("quiet")
    event = parse_event_obj(purchase(customer, "80.00", when=now - timedelta(days=178)))
    policies = PolicyCache()
    async with engine.connect() as sa_conn:
        conn = await raw(sa_conn)
        await policies.load(conn)
        await apply_batch(conn, topic=unique("t"), events=[event], advances=[],
                          policies=policies, now=now)
        # Three days later, with no new event: the sweep re-grades everyone graded before.
        later = now + timedelta(days=3)
        after = ""
        while True:
            ids, _ = await regrade_due(conn, active=policies.active, now=later, limit=500,
                                       after=after)
            if not ids:
                break
            after = ids[-1]
    async with engine.connect() as conn:
        t = tier_changes.c
        rows = (await conn.execute(
            select(t.sequence, t.payload).where(t.customer_id == customer, t.ladder == "lifecycle")
            .order_by(t.id))).all()
        graded_on = await conn.scalar(
            select(customers.c.graded_on).where(customers.c.customer_id == customer))
    assert [(r.payload["from_tier"], r.payload["to_tier"]) for r in rows] == [
        (None, "new"), ("new", "churned")]
    last = rows[-1].payload
    assert (last["reason"], last["direction"], last["sequence"]) == ("schedule", "down", 2)
    assert last["cause_event_id"] is None
    assert last["metrics"]["days_since_last_activity"] == 181
    assert last["actions"] == ["winback_campaign"]
    assert graded_on == later.date()
