"""Building and driving a grader app against the session's PostgreSQL and broker."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from pydantic import SecretStr

from shared.settings import GraderSettings
from tests.support import SESSION_TIMEOUT_MS, unique

ADMIN_KEY = "grader-test-admin-key-0001"
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


def grader_settings(pg_url: str, broker: str, **overrides: Any) -> GraderSettings:
    """Settings with topics and group of this test only."""
    values: dict[str, Any] = {
        "database_url": SecretStr(pg_url), "kafka_bootstrap": broker,
        "topic_events": unique("events"), "topic_dlq": unique("dlq"),
        "topic_tier_changes": unique("changes"), "consumer_group": unique("grader"),
        "events_partitions": 3, "kafka_session_timeout_ms": SESSION_TIMEOUT_MS,
        "api_keys": SecretStr(json.dumps({ADMIN_KEY: ["admin"]})),
    }
    values.update(overrides)
    return GraderSettings(**values)


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered, and a client that talks to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://grader",
                                     headers=HEADERS) as client:
            yield client


def purchase(customer: str, amount: str, *, event_id: str | None = None,
             when: datetime | None = None, category: str = "shoes") -> dict[str, Any]:
    """A purchase event as upstream systems send it."""
    return {
        "event_id": event_id or unique("ev"), "type": "purchase", "customer_id": customer,
        "occurred_at": (when or datetime.now(UTC)).isoformat(),
        "data": {"amount": amount, "currency": "CNY", "category": category},
    }


async def produce(broker: str, topic: str, events: list[dict[str, Any]] | list[bytes]) -> None:
    """Publish events (dicts or raw bytes) keyed by customer."""
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    try:
        for item in events:
            if isinstance(item, bytes):
                await producer.send_and_wait(topic, item, key=b"raw")
            else:
                await producer.send_and_wait(topic, orjson.dumps(item),
                                             key=item["customer_id"].encode())
    finally:
        await producer.stop()


