"""Poison never stalls a partition, through the real grader: what it cannot fold or store
goes to the DLQ with its reason, and the events behind it on the same partition are
graded. The three poisons found in production, on one partition, in one run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.grader.app import create_app
from services.grader.routing import owner_partition
from shared.kafka import ensure_topics
from tests.integration.grader_support import grader_settings, purchase, running
from tests.support import eventually, unique

pytestmark = pytest.mark.integration
REFUNDS = 1000
HUGE = 1_200_000  # bytes: more than the DLQ producer sends in one request (1 MiB)


def refund(customer: str, amount: str) -> dict[str, Any]:
    when = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    return {"event_id": unique("r"), "type": "refund", "customer_id": customer,
            "occurred_at": when, "data": {"amount": amount, "currency": "CNY"}}


async def dead_letters(broker: str, topic: str, expected: int) -> list[tuple[str, bytes]]:
    """(reason header, value) of the first `expected` DLQ messages."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_bytes=8 * 2**20,
                                max_partition_fetch_bytes=8 * 2**20)
    await consumer.start()
    found: list[tuple[str, bytes]] = []
    try:
        async def all_there() -> None:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                found.extend((dict(r.headers)["tierflow-error"].decode(), r.value)
                             for r in batch)
            assert len(found) >= expected

        await eventually(all_there, timeout=30)
    finally:
        await consumer.stop()
    return found


async def test_poison_goes_to_the_dlq_and_the_partition_moves_on(
    migrated_pg: str, broker: str
) -> None:
    settings = grader_settings(migrated_pg, broker)
    await ensure_topics(settings)
    rich, after = unique("rich"), unique("after")
    partition = owner_partition(rich, settings.events_partitions)
    nul = purchase(rich, "5.00")
    nul["data"]["category"] = "sh\x00oes"
    poison = [orjson.dumps(nul), b"{" + b" " * HUGE + b"}",
              *(orjson.dumps(refund(rich, "1000000000000")) for _ in range(REFUNDS))]
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all",
                                max_request_size=4 * 2**20)
    await producer.start()
    try:
        for value in [*poison, orjson.dumps(purchase(after, "7.00"))]:
            # All on the rich customer's partition, the last event for another customer.
            await producer.send_and_wait(settings.topic_events, value, partition=partition,
                                         key=rich.encode())
    finally:
        await producer.stop()
    async with running(create_app(settings)) as client:

        async def graded_after_the_poison() -> None:
            response = await client.get(f"/v1/customers/{after}")
            assert response.status_code == 200, "the event behind the poison is not graded"

        await eventually(graded_after_the_poison, timeout=60)
        body = (await client.get(f"/v1/customers/{rich}")).json()
        metrics_text = (await client.get("/metrics")).text
    assert body["metrics"]["spend_total"] == "0.00"  # 922 refunds folded, no purchase
    letters = await dead_letters(broker, settings.topic_dlq, 2 + REFUNDS - 922)
    reasons = [reason for reason, _ in letters]
    assert any("NUL" in r for r in reasons)
    assert sum("supported range" in r for r in reasons) == REFUNDS - 922
    truncated = [value for reason, value in letters if len(value) < HUGE and value[:1] == b"{"]
    assert truncated, "the oversize record was not dead-lettered (truncated)"
    assert "tierflow_grader_stalled_seconds 0.0" in metrics_text
    # By reason: the NUL and the oversize record are invalid, the refunds past the total fold
    # no more (the metrics are counted when the checkpoint commits, before the lookup).
    assert 'tierflow_grader_dlq_total{reason="invalid"} 2.0' in metrics_text
    assert f'tierflow_grader_dlq_total{{reason="fold"}} {REFUNDS - 922}.0' in metrics_text
    assert 'tierflow_grader_dlq_total{reason="control"} 0.0' in metrics_text
