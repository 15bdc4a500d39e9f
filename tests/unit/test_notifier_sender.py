"""The sender against a fake producer that fails batches: what reaches the topic is, per
customer and ladder, never out of sequence order, whatever fails and is resent."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifier.messages import OutboxRow
from services.notifier.sender import KafkaSender
from shared.kafka import key_partition

PARTITIONS = 3
CREATED = datetime(2026, 11, 20, tzinfo=UTC)


@dataclass
class FakeBatch:
    capacity: int
    records: list[tuple[bytes, bytes]] = field(default_factory=list)

    def append(self, *, timestamp: Any, key: bytes, value: bytes, headers: Any) -> object | None:
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()


class FakeProducer:
    """Fails the batches `fails` names (by their order of sending); a failed batch may still
    have landed (`lands`), as a timed-out produce can."""

    def __init__(self, *, capacity: int, fails: set[int], lands: bool) -> None:
        self.capacity, self.fails, self.lands = capacity, fails, lands
        self.log: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
        self.sent = itertools.count()

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        assert all(key_partition(k, PARTITIONS) == partition for k, _ in batch.records)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if next(self.sent) in self.fails:
            if self.lands:
                self.log[partition] += [v for _, v in batch.records]
            future.set_exception(RuntimeError("produce failed"))
        else:
            self.log[partition] += [v for _, v in batch.records]
            future.set_result(None)
        return future


def rows(customers: int, per_customer: int) -> list[OutboxRow]:
    out, ids = [], itertools.count(1)
    for sequence in range(1, per_customer + 1):
        for c in range(customers):
            body = {"customer_id": f"c-{c}", "ladder": "tier", "sequence": sequence}
            out.append(OutboxRow(
                id=next(ids), message_id=uuid.uuid4(), customer_id=f"c-{c}", ladder="tier",
                sequence=sequence, kind="tier.changed", payload=orjson.dumps(body).decode(),
                created_at=CREATED,
            ))
    return out


async def relay_until_done(producer: FakeProducer, outbox: list[OutboxRow]) -> int:
    """Send the unsent rows again and again, as the relay does, until all are acked."""
    sender = KafkaSender(topic="t", timeout_s=5, producer_factory=lambda: producer)
    unsent, cycles = list(outbox), 0
    while unsent:
        cycles += 1
        assert cycles < 100
        acked = await sender.send(unsent)
        unsent = [row for row, ok in zip(unsent, acked, strict=True) if not ok]
    return cycles


def first_seen_in_order(producer: FakeProducer) -> None:
    """A reader never sees sequence n + 1 of a customer before n (repeats are allowed)."""
    for log in producer.log.values():
        highest: dict[str, int] = {}
        for value in log:
            message = orjson.loads(value)
            seen = highest.get(message["customer_id"], 0)
            assert message["sequence"] <= seen + 1, (message, seen)
            highest[message["customer_id"]] = max(seen, message["sequence"])


@pytest.mark.parametrize("lands", [False, True])
async def test_a_failed_batch_stops_its_partition_and_is_resent_first(lands: bool) -> None:
    producer = FakeProducer(capacity=4, fails={1}, lands=lands)
    outbox = rows(customers=6, per_customer=5)
    assert await relay_until_done(producer, outbox) == 2
    first_seen_in_order(producer)
    delivered = {orjson.loads(v)["customer_id"] + str(orjson.loads(v)["sequence"])
                 for log in producer.log.values() for v in log}
    assert len(delivered) == len(outbox)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    customers=st.integers(1, 8), per_customer=st.integers(1, 6), capacity=st.integers(1, 5),
    fails=st.sets(st.integers(0, 30), max_size=8), lands=st.booleans(),
)
def test_any_failures_keep_sequence_order(
    customers: int, per_customer: int, capacity: int, fails: set[int], lands: bool
) -> None:
    producer = FakeProducer(capacity=capacity, fails=fails, lands=lands)
    asyncio.run(relay_until_done(producer, rows(customers, per_customer)))
    first_seen_in_order(producer)
