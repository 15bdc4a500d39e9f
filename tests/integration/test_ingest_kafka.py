"""Ingest against the real broker: what a 2xx promises is on the topic, keyed by customer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import SecretStr

from services.ingest.app import create_app
from services.ingest.sending import partition_for
from shared.embedded import EmbeddedBroker, free_port
from shared.events import event_json, parse_event
from shared.settings import IngestSettings
from tests.support import eventually, unique

pytestmark = pytest.mark.integration

KEY = "ingest-it-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def settings_for(bootstrap: str, **overrides: Any) -> IngestSettings:
    return IngestSettings(
        kafka_bootstrap=bootstrap, topic_events=unique("ev"), events_partitions=3,
        api_keys=SecretStr(orjson.dumps({KEY: ["events:write"]}).decode()), **overrides,
    )


@asynccontextmanager
async def ingest(settings: IngestSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app (real publisher), lifespan included, behind an in-process client."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield client


async def read_topic(bootstrap: str, topic: str, count: int) -> list[ConsumerRecord]:
    """Every record of `topic` from the beginning, once `count` have arrived."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord] = []

        async def collected() -> list[ConsumerRecord]:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
            assert len(records) >= count
            return records

        return await eventually(collected, timeout=15)
    finally:
        await consumer.stop()


def event(customer_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": unique("ev"), "type": "purchase", "customer_id": customer_id,
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": {"amount": 19.99, "currency": "CNY"}, **fields,
    }


async def test_one_event_lands_on_the_topic(broker: str) -> None:
    settings = settings_for(broker)
    doc = event(unique("c"))
    async with ingest(settings) as client:
        assert (await client.get("/readyz")).status_code == 200
        response = await client.post(
            "/v1/events", content=orjson.dumps(doc),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert response.status_code == 202, response.text
    (record,) = await read_topic(broker, settings.topic_events, 1)
    assert record.key == doc["customer_id"].encode()
    assert record.value == event_json(parse_event(orjson.dumps(doc)))
    assert orjson.loads(record.value)["data"]["amount"] == "19.99"


async def test_batch_lands_keyed_by_customer(broker: str) -> None:
    settings = settings_for(broker)
    customers = [unique("c") for _ in range(4)]
    docs = [event(customers[i % 4]) for i in range(40)]
    bad = event(customers[0], data={"amount": "0", "currency": "CNY"})
    async with ingest(settings) as client:
        response = await client.post(
            "/v1/events/batch", json={"events": [*docs, bad]}, headers=AUTH
        )
    assert response.status_code == 200, response.text
    assert (response.json()["accepted"], response.json()["rejected"]) == (40, 1)
    records = await read_topic(broker, settings.topic_events, 40)
    assert sorted(orjson.loads(r.value)["event_id"] for r in records) == sorted(
        d["event_id"] for d in docs
    )
    by_customer: dict[bytes, set[int]] = {}
    for record in records:
        assert orjson.loads(record.value)["customer_id"].encode() == record.key
        by_customer.setdefault(record.key, set()).add(record.partition)
    assert all(len(parts) == 1 for parts in by_customer.values())  # one partition per key


async def test_full_batch_and_single_events_agree_on_partitions(broker: str) -> None:
    """A 1,000-event batch (built per partition) and single sends place a key identically."""
    settings = settings_for(broker)
    customers = [unique("c") for _ in range(50)]
    docs = [event(customers[i % 50]) for i in range(settings.max_batch_events)]
    singles = [event(c) for c in customers[:5]]
    async with ingest(settings) as client:
        response = await client.post("/v1/events/batch", json={"events": docs}, headers=AUTH)
        assert response.json()["accepted"] == len(docs)
        for doc in singles:
            one = await client.post(
                "/v1/events", content=orjson.dumps(doc),
                headers={**AUTH, "Content-Type": "application/json"},
            )
            assert one.status_code == 202
    records = await read_topic(broker, settings.topic_events, len(docs) + len(singles))
    assert len(records) == len(docs) + len(singles)
    for record in records:
        assert record.partition == partition_for(record.key, range(settings.events_partitions))


async def test_ndjson_batch_lands(broker: str) -> None:
    settings = settings_for(broker)
    docs = [event(unique("c")) for _ in range(5)]
    async with ingest(settings) as client:
        response = await client.post(
            "/v1/events/batch", content=b"\n".join(orjson.dumps(d) for d in docs),
            headers={**AUTH, "Content-Type": "application/x-ndjson"},
        )
    assert response.json()["accepted"] == 5
    records = await read_topic(broker, settings.topic_events, 5)
    assert {orjson.loads(r.value)["event_id"] for r in records} == {d["event_id"] for d in docs}


async def test_no_broker_means_503_and_not_ready() -> None:
    settings = settings_for(f"127.0.0.1:{free_port()}", produce_timeout_s=0.5)
    async with ingest(settings) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        one = await client.post(
            "/v1/events", content=orjson.dumps(event("c-1")),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert one.status_code == 503
        assert one.headers["content-type"] == "application/problem+json"
        assert "retry-after" in one.headers
        batch = await client.post("/v1/events/batch", json={"events": [event("c-1")]}, headers=AUTH)
        assert batch.status_code == 503
        text = (await client.get("/metrics")).text
        assert 'tierflow_ingest_events_total{outcome="unavailable",type="purchase"} 2.0' in text


async def test_broker_arriving_late_and_leaving(tmp_path: Path) -> None:
    """Start without a broker, recover when it appears, answer 503 again once it is gone."""
    port = free_port()
    settings = settings_for(f"127.0.0.1:{port}", produce_timeout_s=1.0)
    headers = {**AUTH, "Content-Type": "application/json"}
    async with ingest(settings) as client:
        assert (await client.post("/v1/events", content=orjson.dumps(event("c")),
                                  headers=headers)).status_code == 503
        server = EmbeddedBroker(port=port, log_path=tmp_path / "late.log")
        await asyncio.to_thread(server.start)
        try:
            async def ready() -> None:
                assert (await client.get("/readyz")).status_code == 200

            await eventually(ready, timeout=20)
            ok = await client.post("/v1/events", content=orjson.dumps(event("c")), headers=headers)
            assert ok.status_code == 202
        finally:
            await asyncio.to_thread(server.stop)
        gone = await client.post("/v1/events", content=orjson.dumps(event("c")), headers=headers)
        assert gone.status_code == 503


async def test_a_broker_that_comes_back_empty_gets_its_topic_again(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedBroker(port=port, log_path=tmp_path / "broker.log")
    await asyncio.to_thread(server.start)
    settings = settings_for(f"127.0.0.1:{port}", produce_timeout_s=2.0)
    headers = {**AUTH, "Content-Type": "application/json"}
    try:
        async with ingest(settings) as client:
            assert (await client.get("/readyz")).status_code == 200
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)  # same address, nothing on it

            async def accepted() -> None:
                assert (await client.get("/readyz")).status_code == 200
                answer = await client.post("/v1/events", content=orjson.dumps(event("back")),
                                           headers=headers)
                assert answer.status_code == 202, answer.text

            await eventually(accepted, timeout=30, interval=0.2)
            [record] = await read_topic(settings.kafka_bootstrap, settings.topic_events, 1)
            assert record.key == b"back"
    finally:
        await asyncio.to_thread(server.stop)
