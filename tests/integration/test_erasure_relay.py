"""An erasure's notice leaves through the notifier like a tier change: on `tier-changes`,
keyed by the customer, typed `customer.erased`, before the fresh customer's first tiers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.grader import repository as repo
from services.grader.grading.customer import CustomerState, fold, grade_customer
from services.grader.grading.policy import ActivePolicy, default_policy_document
from services.notifier.webhooks import store
from services.notifier.webhooks.filters import Filter
from shared.db.engine import connect
from shared.db.tables import tier_changes
from tests.integration.test_notifier_support import (
    RunningRelay,
    change,
    consume_mine,
    create_topic,
    notifier_settings,
)
from tests.support import eventually, migrated_database, unique
from tests.unit.factories import purchase

pytestmark = pytest.mark.integration


async def test_the_erasure_notice_is_relayed_before_the_fresh_customers_changes(
        pg_url: str, broker: str) -> None:
    # A database of its own: the relay sends every unsent row, other tests' notices too.
    async with migrated_database(pg_url, "erasure-relay") as url:
        await relayed_before_the_fresh_customers_changes(url, broker)


async def relayed_before_the_fresh_customers_changes(url: str, broker: str) -> None:
    topic = unique("tier-changes")
    await create_topic(broker, topic)
    customer = unique("erased")
    now = datetime.now(UTC)
    active = ActivePolicy.from_document(1, default_policy_document())
    # Erased, then a new event in the same checkpoint: the notice, then 4 first gradings.
    fresh = fold(CustomerState.new(customer), [purchase("80.00", now.isoformat(),
                                                        customer=customer)])
    changes = grade_customer(fresh, active, now=now, today=now.date(), reason="event")
    conn = await connect(url)
    try:
        await repo.prepare(conn)
        await repo.write_checkpoint(conn, repo.Checkpoint.build(
            topic=unique("erasure"), advances=[], event_keys=[], renewed=[],
            customers=[(0, fresh)], changes=changes, now=now, erased=[(customer, now)]))
    finally:
        await conn.close()

    relay = RunningRelay(notifier_settings(url, broker, topic))
    async with relay.running():
        received = await consume_mine(broker, topic, [customer], 1 + len(changes))
    notice = received[0]
    headers = dict(notice.headers)
    assert headers["tierflow-type"] == b"customer.erased"
    body = orjson.loads(notice.value)
    assert (body["type"], body["customer_id"], body["schema_version"]) == (
        "customer.erased", customer, 1)
    assert datetime.fromisoformat(body["erased_at"]) == now.replace(
        microsecond=now.microsecond // 1000 * 1000)
    assert headers["tierflow-message-id"].decode() == body["id"]
    rest = [orjson.loads(m.value) for m in received[1:]]
    assert {(m["type"], m["sequence"]) for m in rest} == {("tier.changed", 1)}
    assert relay.sample("tierflow_notifier_messages_total", kind="customer.erased",
                        outcome="sent") == 1


async def test_the_erasure_reaches_only_the_subscriptions_that_were_told_of_the_customer(
        engine: AsyncEngine, migrated_pg: str, broker: str) -> None:
    """Subscription `told` was sent a change of the customer, `stranger` (another ladder)
    never was: only `told` gets the notice, and the fresh customer's changes after it go
    to `told` again, in new lanes that wait for nothing."""
    topic = unique("tier-changes")
    await create_topic(broker, topic)
    customer, ladder, other = unique("erased"), unique("ladder"), unique("ladder")
    conn = await connect(migrated_pg)
    try:
        now = datetime.now(UTC)
        told, stranger = await subscribe(conn, now, ladder, other)
        relay = RunningRelay(notifier_settings(migrated_pg, broker, topic))
        async with relay.running():
            first = change(customer, ladder, 1)
            async with engine.begin() as db:
                await db.execute(insert(tier_changes), [first])
            await consume_mine(broker, topic, [customer], 1)
            await eventually(lambda: delivered_to(conn, customer, [(told.id, ladder)]))
            # The erasure, as the customer's owner commits it; then a fresh first change.
            await repo.prepare(conn)
            await repo.write_checkpoint(conn, repo.Checkpoint.build(
                topic=unique("erasure"), advances=[], event_keys=[], renewed=[],
                customers=[], changes=[], now=now, erased=[(customer, now)]))
            async with engine.begin() as db:
                await db.execute(insert(tier_changes), [change(customer, ladder, 1)])
            await consume_mine(broker, topic, [customer], 3)
            await eventually(lambda: delivered_to(
                conn, customer, [(told.id, ""), (told.id, ladder)]))
        rows = await conn.fetch(
            "SELECT d.ladder, d.after_id, d.next_attempt_at < 'infinity' AS due, c.kind "
            "FROM webhook_deliveries d JOIN tier_changes c ON c.id = d.change_id "
            "WHERE d.customer_id = $1 ORDER BY d.id", customer)
        # The first delivery went with the erasure; the notice and the fresh change wait
        # for nothing before them.
        assert [(r["kind"], r["ladder"], r["after_id"], r["due"]) for r in rows] == [
            ("customer.erased", "", None, True), ("tier.changed", ladder, None, True)]
        assert stranger.id not in {r[0] for r in await conn.fetch(
            "SELECT subscription_id FROM webhook_deliveries WHERE customer_id = $1", customer)}
        for subscription in (told, stranger):  # no other test's notifier tries them
            await store.delete_subscription(conn, subscription.id)
    finally:
        await conn.close()


async def subscribe(conn: Any, now: datetime, *ladders: str) -> list[Any]:
    """A subscription to each ladder (nothing is delivered: no dispatcher runs here)."""
    return [await store.create_subscription(
        conn, url=f"https://hooks.example/{ladder}", filter_=Filter(ladders=frozenset({ladder})),
        sealed=b"sealed", at=now) for ladder in ladders]


async def delivered_to(conn: Any, customer: str, expected: list[tuple[Any, str]]) -> None:
    """The customer's deliveries are exactly these (subscription, ladder), in any order
    (subscriptions made in the same instant are fanned out to in id order)."""
    rows = await conn.fetch("SELECT subscription_id, ladder FROM webhook_deliveries "
                            "WHERE customer_id = $1", customer)
    assert sorted((str(r[0]), r[1]) for r in rows) == sorted(
        (str(s), ladder) for s, ladder in expected)


async def test_a_second_erasure_tells_again_whoever_had_not_taken_the_first(
        engine: AsyncEngine, migrated_pg: str, broker: str) -> None:
    """`told` got a change, then the first notice, which it had not taken (nobody delivers
    here) when the fresh customer reached only `later` and was erased again: the second
    erasure deletes the first notice with its delivery, and tells both."""
    topic = unique("tier-changes")
    await create_topic(broker, topic)
    customer, ladder, other = unique("erased"), unique("ladder"), unique("ladder")
    conn = await connect(migrated_pg)
    try:
        now = datetime.now(UTC)
        told, later = await subscribe(conn, now, ladder, other)
        await repo.prepare(conn)

        async def erase() -> None:
            await repo.write_checkpoint(conn, repo.Checkpoint.build(
                topic=unique("erasure"), advances=[], event_keys=[], renewed=[],
                customers=[], changes=[], now=now, erased=[(customer, now)]))

        relay = RunningRelay(notifier_settings(migrated_pg, broker, topic))
        async with relay.running():
            async with engine.begin() as db:
                await db.execute(insert(tier_changes), [change(customer, ladder, 1)])
            await eventually(lambda: delivered_to(conn, customer, [(told.id, ladder)]))
            await erase()
            await eventually(lambda: delivered_to(conn, customer, [(told.id, "")]))
            async with engine.begin() as db:
                await db.execute(insert(tier_changes), [change(customer, other, 1)])
            await eventually(lambda: delivered_to(
                conn, customer, [(told.id, ""), (later.id, other)]))
            await erase()
            await eventually(lambda: delivered_to(
                conn, customer, [(told.id, ""), (later.id, "")]))
        for subscription in (told, later):
            await store.delete_subscription(conn, subscription.id)
    finally:
        await conn.close()
