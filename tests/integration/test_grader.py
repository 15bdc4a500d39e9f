"""The grader against the real PostgreSQL and broker: consume, grade, look up, re-grade."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.grader.app import create_app
from services.grader.grading.policy import default_policy_document
from shared.db.tables import tier_changes
from shared.kafka import ensure_topics
from tests.integration.grader_support import grader_settings, produce, purchase, running
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


async def _customer(client: httpx.AsyncClient, customer: str) -> dict[str, Any]:
    response = await client.get(f"/v1/customers/{customer}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_events_are_graded_once_and_changes_recorded(
    migrated_pg: str, broker: str, engine: AsyncEngine
) -> None:
    settings = grader_settings(migrated_pg, broker)
    await ensure_topics(settings)
    customer = unique("c")
    first = purchase(customer, "30000.00")
    events = [first, first, *[purchase(customer, "2000.00") for _ in range(11)]]
    await produce(broker, settings.topic_events, events)
    async with running(create_app(settings)) as client:

        async def graded() -> dict[str, Any]:
            body = await _customer(client, customer)
            assert body["metrics"]["orders_total"] == 12
            return body

        body = await eventually(graded, timeout=20)
        assert body["metrics"]["spend_365d"] == "52000.00"
        assert body["tiers"]["tier"]["tier"] == "vip"
        assert body["tiers"]["value"]["tier"] == "high"
        missing = await client.get(f"/v1/customers/{unique('nobody')}")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
    async with engine.connect() as conn:
        t = tier_changes.c
        rows = (await conn.execute(
            select(t.ladder, t.sequence, t.payload)
            .where(t.customer_id == customer, t.kind == "tier.changed").order_by(t.id)
        )).all()
    sequences: dict[str, list[int]] = {}
    for ladder, sequence, _ in rows:
        sequences.setdefault(ladder, []).append(sequence)
    assert set(sequences) == {"tier", "value", "lifecycle", "nps"}
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in sequences.values())


async def test_same_event_id_posted_again_changes_nothing(migrated_pg: str, broker: str) -> None:
    settings = grader_settings(migrated_pg, broker)
    await ensure_topics(settings)
    customer = unique("c")
    event = purchase(customer, "100.00")
    await produce(broker, settings.topic_events, [event])
    async with running(create_app(settings)) as client:
        await eventually(lambda: _customer(client, customer), timeout=20)
        await produce(broker, settings.topic_events, [event, purchase(customer, "1.00")])

        async def second_applied() -> dict[str, Any]:
            body = await _customer(client, customer)
            assert body["metrics"]["orders_total"] == 2
            return body

        body = await eventually(second_applied, timeout=20)
        assert body["metrics"]["spend_total"] == "101.00"


async def _metric(client: httpx.AsyncClient, name: str) -> float:
    text = (await client.get("/metrics")).text
    found = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


async def test_same_event_id_with_another_payload_is_counted_and_ignored(
    migrated_pg: str, broker: str
) -> None:
    settings = grader_settings(migrated_pg, broker)
    await ensure_topics(settings)
    customer = unique("c")
    first = purchase(customer, "100.00")
    other = {**first, "data": {**first["data"], "amount": "999.00"}}
    # In one poll: the conflict is found among the events not committed yet.
    await produce(broker, settings.topic_events, [first, other])
    async with running(create_app(settings)) as client:
        body = await eventually(lambda: _customer(client, customer), timeout=20)
        assert body["metrics"]["spend_total"] == "100.00"
        # Later: found in the dedupe table. An exact repeat is a plain duplicate.
        third = {**first, "source": "another-till"}
        await produce(broker, settings.topic_events,
                      [first, third, purchase(customer, "1.00")])

        async def settled() -> dict[str, Any]:
            body = await _customer(client, customer)
            assert body["metrics"]["orders_total"] == 2
            return body

        body = await eventually(settled, timeout=20)
        assert body["metrics"]["spend_total"] == "101.00"  # the first one applied stands

        async def counted() -> None:  # counted once the checkpoint is durable
            duplicates = 'tierflow_grader_events_total{outcome="duplicate"}'
            assert await _metric(client, duplicates) == 3
            assert await _metric(client, "tierflow_grader_conflicting_duplicates_total") == 2

        await eventually(counted, timeout=20)


async def test_poison_messages_go_to_the_dlq(migrated_pg: str, broker: str) -> None:
    settings = grader_settings(migrated_pg, broker)
    await ensure_topics(settings)
    customer = unique("c")
    bad_currency = purchase(customer, "5.00")
    bad_currency["data"]["currency"] = "USD"
    await produce(broker, settings.topic_events,
                  [b"not json", orjson_bytes(bad_currency)])
    await produce(broker, settings.topic_events, [purchase(customer, "7.00")])
    consumer = AIOKafkaConsumer(settings.topic_dlq, bootstrap_servers=broker,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    async with running(create_app(settings)) as client:
        body = await eventually(lambda: _customer(client, customer), timeout=20)
        assert body["metrics"]["spend_total"] == "7.00"
        await consumer.start()
        try:
            errors: list[str] = []

            async def dead_lettered() -> None:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    errors.extend(dict(r.headers)["tierflow-error"].decode() for r in batch)
                assert len(errors) == 2

            await eventually(dead_lettered, timeout=20)
        finally:
            await consumer.stop()
    assert any("currency" in e for e in errors)


async def test_policy_change_regrades_everyone(migrated_pg: str, broker: str) -> None:
    settings = grader_settings(migrated_pg, broker)
    await ensure_topics(settings)
    customer = unique("c")
    await produce(broker, settings.topic_events, [purchase(customer, "500.00")])
    stricter = default_policy_document()
    stricter["ladders"][0]["tiers"][2]["when"] = {
        "metric": "orders_total", "op": ">=", "value": 2}
    async with running(create_app(settings)) as client:
        body = await eventually(lambda: _customer(client, customer), timeout=20)
        assert body["tiers"]["tier"]["tier"] == "regular"
        invalid = await client.put("/v1/policy", json={"ladders": []})
        assert invalid.status_code == 422
        assert {e["path"] for e in invalid.json()["errors"]} == {"ladders"}
        try:
            answer = await client.put("/v1/policy", json=stricter)
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["job_id"]

            async def job_done() -> dict[str, Any]:
                job = (await client.get(f"/v1/jobs/{job_id}")).json()
                assert job["status"] == "done"
                return job

            job = await eventually(job_done, timeout=20)
            assert job["total"] >= 1
            body = await _customer(client, customer)
            # A downgrade: the tier ladder's 30-day grace keeps the tier and schedules it.
            assert body["tiers"]["tier"]["tier"] == "regular"
            assert body["tiers"]["tier"]["computed"] == "prospect"
            assert body["tiers"]["tier"]["pending_downgrade"]["to"] == "prospect"
            assert body["policy_version"] == answer.json()["version"]
        finally:
            restored = await client.put("/v1/policy", json=default_policy_document())
            assert restored.status_code == 202


async def test_lookup_and_distribution(migrated_pg: str, broker: str) -> None:
    settings = grader_settings(migrated_pg, broker)
    await ensure_topics(settings)
    customers = [unique("c") for _ in range(3)]
    await produce(broker, settings.topic_events, [purchase(c, "10.00") for c in customers])
    async with running(create_app(settings)) as client:

        async def all_found() -> dict[str, Any]:
            answer = await client.post(
                "/v1/customers/lookup", json={"customer_ids": [*customers, "never-seen"]})
            body: dict[str, Any] = answer.json()
            assert len(body["customers"]) == 3
            return body

        body = await eventually(all_found, timeout=20)
        assert body["not_found"] == ["never-seen"]
        dist = (await client.get("/v1/stats/distribution")).json()
        assert list(dist["ladders"]) == ["tier", "value", "lifecycle", "nps"]
        assert dist["ladders"]["tier"]["regular"] >= 3
        unauth = await client.get("/v1/stats/distribution", headers={"Authorization": ""})
        assert unauth.status_code == 401


def orjson_bytes(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


