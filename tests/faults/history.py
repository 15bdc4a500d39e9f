"""What the fault tests share: a deterministic history, progress, and the oracle."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.grader.grading.aggregates import Aggregates, apply
from services.grader.grading.metrics import compute_metrics
from services.grader.repository import decode_state
from shared.db.tables import consumer_offsets, customers
from shared.embedded import free_port
from shared.events import parse_event_obj
from tests.processes import Service
from tests.support import SESSION_TIMEOUT_MS, unique


def grader_service(pg_url: str, broker: str, topic: str, group: str, log_dir: Path,
                   *, name: str = "grader", batch: int = 200) -> Service:
    """A grader subprocess on this test's topic and consumer group."""
    port = free_port()
    env = {
        "TIERFLOW_DATABASE_URL": pg_url, "TIERFLOW_KAFKA_BOOTSTRAP": broker,
        "TIERFLOW_TOPIC_EVENTS": topic, "TIERFLOW_TOPIC_DLQ": unique("dlq"),
        "TIERFLOW_TOPIC_TIER_CHANGES": unique("changes"), "TIERFLOW_EVENTS_PARTITIONS": "3",
        "TIERFLOW_CONSUMER_GROUP": group,
        "TIERFLOW_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "TIERFLOW_BATCH_MAX_EVENTS": str(batch), "TIERFLOW_CHECKPOINT_MAX_EVENTS": str(batch),
        "TIERFLOW_GRADER_PORT": str(port),
        "TIERFLOW_API_KEYS": json.dumps({"fault-test-key-000001": ["admin"]}),
    }
    service = Service("grader", env, port=port, log_dir=log_dir)
    service.log_path = log_dir / f"{name}.log"
    return service


EVENTS = 6000
CUSTOMERS = 300


def history(prefix: str, rng: random.Random) -> list[dict[str, Any]]:
    """Purchases, refunds, interactions and feedback over the last year, with duplicates."""
    now = datetime.now(UTC)
    events: list[dict[str, Any]] = []
    for n in range(EVENTS):
        customer = f"{prefix}-{rng.randrange(CUSTOMERS)}"
        when = (now - timedelta(minutes=rng.randrange(365 * 24 * 60))).isoformat()
        kind = rng.choice(["purchase", "purchase", "refund", "interaction", "feedback"])
        data: dict[str, Any] = {
            "purchase": {"amount": f"{rng.randrange(100, 900000) / 100:.2f}", "currency": "CNY",
                         "category": rng.choice(["shoes", "bags", "tea"])},
            "refund": {"amount": f"{rng.randrange(100, 5000) / 100:.2f}", "currency": "CNY"},
            "interaction": {"channel": "app", "action": rng.choice(["visit", "referral"])},
            "feedback": {"rating": rng.randrange(1, 6), "nps": rng.randrange(11)},
        }[kind]
        events.append({"event_id": f"{prefix}-e{n}", "type": kind, "customer_id": customer,
                       "occurred_at": when, "data": data})
    events.extend(rng.sample(events, 200))  # the same event_id delivered again
    return events


async def applied_offsets(engine: AsyncEngine, topic: str) -> int:
    """Sum of stored positions: how many messages the committed state covers."""
    async with engine.connect() as conn:
        total = await conn.scalar(
            select(func.coalesce(func.sum(consumer_offsets.c.next_offset), 0))
            .where(consumer_offsets.c.topic == topic))
    return int(total or 0)


async def differing_customers(
    engine: AsyncEngine, prefix: str, events: list[dict[str, Any]]
) -> list[str]:
    """Customers whose stored metrics differ from a fold of their unique accepted events
    from scratch (an event applied twice, or lost, shows here), and customers that should
    exist and do not, or exist and should not."""
    expected: dict[str, Aggregates] = defaultdict(Aggregates)
    seen: set[str] = set()
    for raw_event in events:
        if raw_event["event_id"] in seen:
            continue
        seen.add(raw_event["event_id"])
        event = parse_event_obj(raw_event)
        apply(expected[event.customer_id], event)
    async with engine.connect() as conn:
        c = customers.c
        rows = (await conn.execute(
            select(c.customer_id, c.state, c.policy_version, c.graded_on)
            .where(c.customer_id.like(f"{prefix}-%")))).all()
    today = datetime.now(UTC).date()
    differing = sorted(set(expected) ^ {row[0] for row in rows})
    for customer_id, blob, version, graded_on in rows:
        if customer_id not in expected:
            continue
        recomputed = compute_metrics(expected[customer_id], today)
        actual = compute_metrics(decode_state(customer_id, blob, version, graded_on).aggregates,
                                 today)
        if actual != recomputed:
            differing.append(customer_id)
    return differing


async def assert_state_equals_recomputation(
    engine: AsyncEngine, prefix: str, events: list[dict[str, Any]]
) -> None:
    """Fold each customer's unique accepted events from scratch and compare with the rows."""
    assert await differing_customers(engine, prefix, events) == []
