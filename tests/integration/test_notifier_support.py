"""Helpers for the notifier's integration tests (this module holds no tests).

`tier_changes` is shared by the whole session and a relay moves *every* unsent row, so
each test uses its own customers and topic and asserts only on its own rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import NewTopic
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.app import build_relay
from services.notifier.metrics import NotifierMetrics
from shared.db.tables import tier_changes
from shared.kafka import ensure_topics
from shared.settings import NotifierSettings

LADDERS = ("tier", "value")


def notifier_settings(pg_url: str, bootstrap: str, topic: str, **extra: Any) -> NotifierSettings:
    """Test settings: a short idle poll so the relay reacts quickly."""
    return NotifierSettings(
        database_url=SecretStr(pg_url), kafka_bootstrap=bootstrap, topic_tier_changes=topic,
        relay_idle_ms=20, **extra,
    )


async def create_topic(bootstrap: str, topic: str) -> None:
    settings = NotifierSettings(kafka_bootstrap=bootstrap)
    await ensure_topics(settings, [NewTopic(topic, 4, 1, topic_configs={"retention.ms": "-1"})])


def change(customer: str, ladder: str, sequence: int) -> dict[str, Any]:
    """A tier_changes row as the grader writes it, the message complete in `payload`."""
    message_id = uuid.uuid4()
    kind = "tier.downgrade_scheduled" if sequence % 3 == 0 else "tier.changed"
    payload = {
        "id": str(message_id), "type": kind, "schema_version": 1, "sequence": sequence,
        "customer_id": customer, "ladder": ladder, "from_tier": None, "to_tier": "vip",
        "direction": "initial", "reason": "event", "policy_version": 1,
        "changed_at": "2026-11-20T02:15:01.120Z", "actions": ["exclusive_offer"],
        "metrics": {"spend_365d": "51200.00", "orders_365d": 13},
    }
    return {
        "message_id": message_id, "customer_id": customer, "ladder": ladder,
        "sequence": sequence, "kind": kind, "payload": payload,
    }


async def record_changes(
    engine: AsyncEngine, customers: Sequence[str], sequences: range
) -> list[dict[str, Any]]:
    """Insert one round per sequence number, so ids grow with sequence for each customer."""
    rows = []
    for sequence in sequences:
        batch = [change(c, ladder, sequence) for c in customers for ladder in LADDERS]
        async with engine.begin() as conn:
            await conn.execute(insert(tier_changes), batch)
        rows += batch
    return rows


async def unsent_ids(engine: AsyncEngine, rows: Sequence[dict[str, Any]]) -> set[uuid.UUID]:
    ids = [r["message_id"] for r in rows]
    query = select(tier_changes.c.message_id).where(
        tier_changes.c.message_id.in_(ids), tier_changes.c.sent_at.is_(None)
    )
    async with engine.connect() as conn:
        return set((await conn.execute(query)).scalars())


async def consume_mine(
    bootstrap: str, topic: str, customers: Sequence[str], count: int, *, timeout: float = 20
) -> list[Any]:
    """Read the topic from the start until `count` messages of `customers` have arrived."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    mine, deadline = [], time.monotonic() + timeout
    try:
        while len(mine) < count:
            assert time.monotonic() < deadline, f"only {len(mine)} of {count} arrived"
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                mine += [r for r in records if r.key.decode() in customers]
    finally:
        await consumer.stop()
    return mine


class RunningRelay:
    """A relay with its own metrics, run as a task for the duration of an `async with`."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.registry = CollectorRegistry()
        self.relay = build_relay(settings, NotifierMetrics.create(self.registry))

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def is_leader(self) -> None:
        assert self.sample("tierflow_notifier_is_leader") == 1

    def start(self) -> None:
        self.task = asyncio.create_task(self.relay.run())

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RunningRelay]:
        self.start()
        try:
            yield self
        finally:
            await self.stop()


def failed(relay: RunningRelay) -> float:
    return sum(
        relay.sample("tierflow_notifier_messages_total", kind=kind, outcome="failed")
        for kind in ("tier.changed", "tier.downgrade_scheduled")
    )
