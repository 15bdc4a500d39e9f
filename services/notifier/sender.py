"""Produce outbox rows partition by partition, one batch at a time, so a failure never
lets a later message of a customer reach the topic before an earlier one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from services.notifier.messages import OutboxRow, to_record
from shared.kafka import key_partition

log = logging.getLogger(__name__)

# Beyond make_producer's request timeout (10 s), by when every pending batch has expired.
STOP_TIMEOUT_S = 15.0


class Producer(Protocol):
    """The part of `AIOKafkaProducer` the relay uses."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def partitions_for(self, topic: str) -> set[int]: ...

    def create_batch(self) -> Any: ...

    async def send_batch(
        self, batch: Any, topic: str, *, partition: int
    ) -> asyncio.Future[Any]: ...


class KafkaSender:
    """Sends each partition's rows as consecutive batches, the next only after the previous
    one is acknowledged. A batch is appended by the broker whole or not at all, so when one
    fails nothing after it is sent: the rows are retried later from there, in order.
    (Without the idempotent producer, which Tansu lacks, queued batches could otherwise land
    after a failed one, and a reader would see a customer's sequence 6 before 5.)"""

    def __init__(
        self, *, topic: str, timeout_s: float, producer_factory: Callable[[], Producer]
    ) -> None:
        self._topic = topic
        self._timeout_s = timeout_s
        self._factory = producer_factory
        self._producer: Producer | None = None

    async def send(self, rows: Sequence[OutboxRow]) -> list[bool]:
        """`True` for each row the broker acknowledged; per partition, those are a prefix."""
        acked = [False] * len(rows)
        try:
            producer = await self._started()
            count = len(await producer.partitions_for(self._topic))
        except KafkaError as exc:
            log.warning("broker unavailable: %r", exc)
            return acked
        queues: dict[int, list[int]] = {}
        for index, row in enumerate(rows):
            queues.setdefault(key_partition(row.customer_id.encode(), count), []).append(index)
        try:
            async with asyncio.timeout(self._timeout_s):
                while queues:
                    await self._wave(producer, rows, queues, acked)
        except (TimeoutError, KafkaError) as exc:
            log.warning("producing %d tier changes failed: %r", acked.count(False), exc)
        return acked

    async def _wave(
        self, producer: Producer, rows: Sequence[OutboxRow], queues: dict[int, list[int]],
        acked: list[bool],
    ) -> None:
        """One batch per partition, all in flight together; a partition that fails stops."""
        sent: dict[int, tuple[asyncio.Future[Any], list[int]]] = {}
        for partition, queue in list(queues.items()):
            batch = producer.create_batch()
            taken = 0
            for index in queue:
                record = to_record(rows[index])
                if batch.append(
                    timestamp=None, key=record.key, value=record.value, headers=record.headers
                ) is None:
                    break
                taken += 1
            if taken == 0:  # a message larger than a batch: it cannot be produced at all
                log.error("tier change %s is too large to produce", rows[queue[0]].message_id)
                del queues[partition]
                continue
            future = await producer.send_batch(batch, self._topic, partition=partition)
            sent[partition] = (future, queue[:taken])
            queues[partition] = queue[taken:]
        if sent:
            await asyncio.wait([future for future, _ in sent.values()])
        for partition, (future, indexes) in sent.items():
            if _acked(future):
                for index in indexes:
                    acked[index] = True
                if not queues[partition]:
                    del queues[partition]
            else:
                log.warning("producing to partition %d failed: %r", partition,
                            None if future.cancelled() else future.exception())
                del queues[partition]

    async def close(self) -> None:
        """Stop the producer (flushing what it still holds, within a bound)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer)

    async def _started(self) -> Producer:
        if self._producer is None:
            producer = self._factory()
            # Not cancelled half-way: aiokafka's bootstrap leaks its connection when
            # interrupted between connecting and reading the metadata.
            starting = asyncio.ensure_future(producer.start())
            try:
                await asyncio.shield(starting)
            except BaseException:
                await asyncio.wait([starting])
                if not starting.cancelled():
                    starting.exception()  # seen: the failure is the caller's to report
                await _stop_quietly(producer)
                raise
            self._producer = producer
        return self._producer


def _acked(future: asyncio.Future[Any]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


async def _stop_quietly(producer: Producer) -> None:
    try:
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await producer.stop()
    except (TimeoutError, KafkaError, OSError) as exc:
        log.warning("stopping the producer failed: %r", exc)
