"""Messages a checkpoint must see acknowledged before its positions move past their
records: dead letters (with the reason) and events re-routed to their owner partition."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import MessageSizeTooLargeError

from shared.settings import GraderSettings

log = logging.getLogger(__name__)
# What is kept of a value too large for the DLQ topic: enough to recognise the message.
TRUNCATE_TO = 64 * 1024


class SideEffects:
    """Queues produce requests during a poll; `flush` sends them and waits for the acks."""

    def __init__(self, producer: AIOKafkaProducer, settings: GraderSettings) -> None:
        self.producer = producer
        self.settings = settings
        self._dead: list[tuple[ConsumerRecord, str]] = []
        self._reroute: list[tuple[ConsumerRecord, str, int]] = []
        self._counts = [0, 0]
        self._reasons: dict[str, int] = {}

    def dead_letter(self, record: ConsumerRecord, error: str, reason: str) -> None:
        """Send a record the grader cannot use to the DLQ, with why (in words, and as one
        of intake.DLQ_REASONS for the metrics)."""
        self._dead.append((record, error))
        self._reasons[reason] = self._reasons.get(reason, 0) + 1

    def take_reasons(self) -> dict[str, int]:
        """Dead letters per reason since the last call."""
        reasons, self._reasons = self._reasons, {}
        return reasons

    def reroute(self, record: ConsumerRecord, customer_id: str, partition: int) -> None:
        """Send an event published under another key to the partition that owns its
        customer (its owner folds it; this consumer skips it)."""
        self._reroute.append((record, customer_id, partition))

    def take_counts(self) -> tuple[int, int]:
        """(dead-lettered, re-routed) since the last call."""
        counts, self._counts = tuple(self._counts), [0, 0]
        return counts[0], counts[1]

    async def flush(self) -> None:
        """Send everything queued; returns once the broker has acknowledged all of it."""
        dead, self._dead = self._dead, []
        reroute, self._reroute = self._reroute, []
        futures = [await self._send_dead(record, reason) for record, reason in dead]
        for record, customer_id, partition in reroute:
            headers = [*(record.headers or ()),
                       ("tierflow-rerouted-from", f"{record.partition}/{record.offset}".encode())]
            futures.append(await self.producer.send(
                self.settings.topic_events, value=record.value, key=customer_id.encode(),
                partition=partition, timestamp_ms=record.timestamp, headers=headers))
        await asyncio.gather(*futures)
        self._counts[0] += len(dead)
        self._counts[1] += len(reroute)

    async def _send_dead(self, record: ConsumerRecord, reason: str) -> asyncio.Future[object]:
        headers = [
            ("tierflow-error", reason[:1000].encode()),
            ("tierflow-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        future: asyncio.Future[object]
        try:
            future = await self.producer.send(self.settings.topic_dlq, value=record.value,
                                              key=record.key, headers=headers)
        except MessageSizeTooLargeError:
            size = len(record.value or b"")
            log.warning("dead letter %s/%s too large (%d bytes): sending its first %d bytes",
                        record.partition, record.offset, size, TRUNCATE_TO)
            headers.append(("tierflow-truncated-from", str(size).encode()))
            future = await self.producer.send(
                self.settings.topic_dlq, value=(record.value or b"")[:TRUNCATE_TO],
                key=(record.key or b"")[:1024], headers=headers)
        return future
