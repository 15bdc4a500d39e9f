"""Overrides and erasure over HTTP, against a running grader whose clock the test moves:
each write goes to the customer's owner as a control record on the events topic and is
applied in order with the customer's events."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.cli import customer as cli
from services.cli.config import CliError
from services.grader import repository as repo
from services.grader.app import create_app
from services.grader.controls import Control
from services.grader.routing import owner_partition
from shared.db.tables import customers, tier_changes
from shared.kafka import ensure_topics
from tests.integration.grader_support import (
    ADMIN_KEY,
    grader_settings,
    produce,
    purchase,
    running,
)
from tests.support import applied_events, eventually, unique

pytestmark = pytest.mark.integration
READER_KEY = "override-test-reader-0001"
KEYS = SecretStr(json.dumps({ADMIN_KEY: ["admin"], READER_KEY: ["tiers:read"]}))


async def messages(engine: AsyncEngine, customer: str, ladder: str | None = None,
                   ) -> list[dict[str, Any]]:
    """The customer's recorded messages, oldest first."""
    t = tier_changes.c
    query = select(t.payload).where(t.customer_id == customer).order_by(t.id)
    if ladder is not None:
        query = query.where(t.ladder == ladder)
    async with engine.connect() as conn:
        return [row.payload for row in (await conn.execute(query)).all()]


async def test_an_override_is_set_shown_removed_and_expires_by_the_clock(
    migrated_pg: str, broker: str, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    clock = [now]
    settings = grader_settings(migrated_pg, broker, api_keys=KEYS, write_wait_seconds=30)
    await ensure_topics(settings)
    customer, expiring = unique("pinned"), unique("expiring")
    await produce(broker, settings.topic_events, [
        purchase(customer, "80.00", when=now - timedelta(days=2)),
        purchase(expiring, "80.00", when=now - timedelta(days=2))])
    base = f"/v1/customers/{customer}/overrides"

    async with running(create_app(settings, clock=lambda: clock[0])) as client:

        async def graded() -> None:
            for who in (customer, expiring):
                assert len(await messages(engine, who, "tier")) == 1

        await eventually(graded, timeout=20)

        # Refusals, before anything is sent.
        body = {"tier": "vip", "reason": "key account, signed 2026-11"}
        reader = {"Authorization": f"Bearer {READER_KEY}"}
        assert (await client.put(f"{base}/tier", json=body, headers=reader)).status_code == 403
        r = await client.put(f"/v1/customers/{unique('nobody')}/overrides/tier", json=body)
        assert r.status_code == 404, r.text
        r = await client.put(f"{base}/loyalty", json=body)
        assert r.status_code == 404 and "tier, value" in r.json()["detail"], r.text
        r = await client.put(f"{base}/tier", json={
            "tier": "platinum", "reason": "x",
            "expires_at": (now - timedelta(hours=1)).isoformat()})
        assert r.status_code == 422, r.text
        assert [e["field"] for e in r.json()["errors"]] == ["body.tier", "body.expires_at"]
        r = await client.put(f"{base}/tier", json={"tier": "vip", "reason": "",
                                                   "expires_at": "2030-01-01T00:00:00"})
        assert r.status_code == 422, r.text  # empty reason, no offset
        assert (await client.delete(f"{base}/tier")).status_code == 404  # none set
        assert len(await messages(engine, customer, "tier")) == 1

        # Set: applied by the owner before the answer; the computed tier is still shown.
        r = await client.put(f"{base}/tier", json=body)
        assert r.status_code == 200, r.text
        tier = r.json()["tiers"]["tier"]
        assert (tier["tier"], tier["computed"]) == ("vip", "regular")
        assert tier["override"]["tier"] == "vip"
        assert tier["override"]["reason"] == body["reason"]
        assert tier["override"]["expires_at"] is None
        looked = (await client.get(f"/v1/customers/{customer}", headers=reader)).json()
        assert looked["tiers"]["tier"] == tier
        explained = (await client.get(f"/v1/customers/{customer}/explain", headers=reader)).json()
        told = explained["ladders"]["tier"]
        assert (told["tier"], told["why"], told["override"]["tier"]) == ("vip", "override", "vip")
        assert told["forecast"] is None  # pinned until removed

        # Setting it again to the same tier moves nothing and records nothing.
        assert (await client.put(f"{base}/tier", json=body)).status_code == 200

        # Removed: the entry conditions decide again at once.
        r = await client.delete(f"{base}/tier")
        assert r.status_code == 200, r.text
        assert (r.json()["tiers"]["tier"]["tier"], r.json()["tiers"]["tier"]["override"]) == (
            "regular", None)
        assert (await client.delete(f"{base}/tier")).status_code == 404

        # An override with an expiry: it ends by the first UTC midnight at or after it.
        ends = now.replace(microsecond=0) + timedelta(hours=2)
        r = await client.put(f"/v1/customers/{expiring}/overrides/value", json={
            "tier": "high", "reason": "trial of the high-value programme",
            "expires_at": ends.isoformat()})
        assert r.status_code == 200, r.text
        shown = r.json()["tiers"]["value"]["override"]["expires_at"]
        assert datetime.fromisoformat(shown) == ends
        end_day = ends.date() + timedelta(days=1)  # 2 hours past a time of day: not midnight
        explained = (await client.get(f"/v1/customers/{expiring}/explain")).json()
        told = explained["ladders"]["value"]
        assert told["why"] == "override"
        assert told["forecast"] == {"on": end_day.isoformat(), "from_tier": "high",
                                    "to_tier": "low"}

        async def due(expected: date) -> None:
            c = customers.c
            async with engine.connect() as conn:
                found = await conn.scalar(select(c.due_on).where(c.customer_id == expiring))
            assert found is not None and found <= expected, found

        await due(end_day)
        clock[0] = datetime(end_day.year, end_day.month, end_day.day, 0, 30, tzinfo=UTC)

        async def released() -> list[dict[str, Any]]:
            found = await messages(engine, expiring, "value")
            assert len(found) == 3, found
            return found

        value = await eventually(released, timeout=30)
        r = await client.get(f"/v1/customers/{expiring}")
        assert r.json()["tiers"]["value"]["override"] is None

    tiers = await messages(engine, customer, "tier")
    assert [(m["from_tier"], m["to_tier"], m["reason"], m["direction"]) for m in tiers] == [
        (None, "regular", "event", "initial"), ("regular", "vip", "override", "up"),
        ("vip", "regular", "override", "down")]
    assert [m["sequence"] for m in tiers] == [1, 2, 3]
    assert [(m["from_tier"], m["to_tier"], m["reason"]) for m in value] == [
        (None, "low", "event"), ("low", "high", "override"), ("high", "low", "override")]
    assert value[-1]["cause_event_id"] is None


async def test_erasure_removes_the_customer_and_later_events_start_a_fresh_one(
    migrated_pg: str, broker: str, engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = grader_settings(migrated_pg, broker, write_wait_seconds=30)
    await ensure_topics(settings)
    customer = unique("forgotten")
    first = [purchase(customer, "6000.00"), purchase(customer, "6000.00")]
    await produce(broker, settings.topic_events, first)

    async with running(create_app(settings)) as client:

        async def graded() -> None:
            async with engine.connect() as conn:
                assert await applied_events(conn, first) == 2

        await eventually(graded, timeout=20)
        # Through the CLI: `tierflow customer override ID nps promoter --reason ...`.
        def options(action: str, **more: Any) -> cli.CustomerOptions:
            return cli.CustomerOptions(action, "http://grader", ADMIN_KEY, customer, **more)

        with pytest.raises(CliError, match=r"body\.tier: not a tier of 'nps'"):
            await cli.override(client, options("override", ladder="nps", tier="fan",
                                               reason="x"))
        with pytest.raises(CliError, match="give the TIER and --reason"):
            await cli.override(client, options("override", ladder="nps", tier="promoter"))
        capsys.readouterr()
        assert await cli.override(client, options(
            "override", ladder="nps", tier="promoter", reason="said so on the phone")) == 0
        shown = capsys.readouterr().out
        assert re.search(r"nps +promoter .*, computed unknown, pinned \(said so on the phone\) "
                         r"until cleared", shown), shown
        with pytest.raises(CliError, match="add --yes"):
            await cli.erase(client, options("erase"))
        assert (await client.get(f"/v1/customers/{customer}")).status_code == 200
        before = await messages(engine, customer)
        assert {m["to_tier"] for m in before} >= {"important", "promoter"}

        r = await client.delete(f"/v1/customers/{customer}")
        assert r.status_code == 200, r.text
        assert (r.json()["customer_id"], r.json()["status"]) == (customer, "erased")
        assert (await client.get(f"/v1/customers/{customer}")).status_code == 404
        assert (await client.get(f"/v1/customers/{customer}/explain")).status_code == 404
        left = await messages(engine, customer)
        assert [m["type"] for m in left] == ["customer.erased"]
        assert left[0]["erased_at"] == r.json()["erased_at"]
        history = (await client.get(f"/v1/customers/{customer}/history")).json()
        assert [m["type"] for m in history["items"]] == ["customer.erased"]
        capsys.readouterr()
        assert await cli.history(client, options("history")) == 0
        assert "erased: everything before this was deleted" in capsys.readouterr().out
        async with engine.connect() as conn:
            # The dedupe records stay until the window prunes them, under keys nobody
            # can link to the customer or their event ids any more.
            assert await applied_events(conn, first) == 0
        # An id nobody holds: nothing to erase, not an error.
        assert (await client.delete(f"/v1/customers/{unique('never')}")).status_code == 200
        assert (await client.delete("/v1/customers/bad%20id")).status_code == 404

        # The same event ids again: a fresh customer, nothing remembered.
        await produce(broker, settings.topic_events, first[:1])

        async def fresh() -> dict[str, Any]:
            r = await client.get(f"/v1/customers/{customer}")
            assert r.status_code == 200, r.text
            found: dict[str, Any] = r.json()
            return found

        again = await eventually(fresh, timeout=20)
    assert again["metrics"]["orders_total"] == 1
    assert again["tiers"]["nps"]["override"] is None
    after = await messages(engine, customer)
    assert [m["type"] for m in after[:1]] == ["customer.erased"]
    assert {(m["ladder"], m["sequence"], m["from_tier"]) for m in after[1:]} == {
        (ladder, 1, None) for ladder in ("tier", "value", "lifecycle", "nps")}


async def test_an_erasure_between_two_events_keeps_only_the_later_one(
    migrated_pg: str, broker: str, engine: AsyncEngine
) -> None:
    """Published in this order before the grader starts, so one poll usually holds all
    three; the outcome is the same when it does not."""
    settings = grader_settings(migrated_pg, broker)
    await ensure_topics(settings)
    customer = unique("between")
    before, after = purchase(customer, "30000.00"), purchase(customer, "90.00")
    erase = Control.make("erase", customer, requested_at=datetime.now(UTC))
    partition = owner_partition(customer, settings.events_partitions)
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    try:
        for value, headers in ((orjson.dumps(before), None),
                               (erase.value(), erase.headers()),
                               (orjson.dumps(after), None)):
            await producer.send(settings.topic_events, value, key=customer.encode(),
                                partition=partition, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()

    async with running(create_app(settings)) as client:

        async def stored() -> dict[str, Any]:
            r = await client.get(f"/v1/customers/{customer}")
            assert r.status_code == 200, r.text
            async with engine.connect() as conn:
                assert await conn.scalar(text(
                    "SELECT count(*) FROM processed_events WHERE event_hash = :k"),
                    {"k": uuid.UUID(repo.event_hash(erase.key_id))}) == 1
            found: dict[str, Any] = r.json()
            return found

        found = await eventually(stored, timeout=20)
    assert found["metrics"]["orders_total"] == 1
    assert found["metrics"]["spend_total"] == "90.00"
    assert found["tiers"]["value"]["tier"] == "low"
    # The notice first (the first purchase may have been recorded by then), then the
    # fresh customer's first tiers.
    recorded = await messages(engine, customer)
    assert [m["type"] for m in recorded] == ["customer.erased"] + ["tier.changed"] * 4
    assert {m["sequence"] for m in recorded[1:]} == {1}
