"""Produce a batch of outbox rows with one long-lived producer; report which the broker acked."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from services.notifier.messages import OutboxRow, to_record

log = logging.getLogger(__name__)

# Beyond make_producer's request timeout (10 s), by when every pending batch has expired.
STOP_TIMEOUT_S = 15.0


class Producer(Protocol):
    """The part of `AIOKafkaProducer` the relay uses."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(
        self, topic: str, value: bytes, *, key: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]: ...


class KafkaSender:
    """Sends rows in order with one producer, so each partition keeps the rows' order."""

    def __init__(
        self, *, topic: str, timeout_s: float, producer_factory: Callable[[], Producer]
    ) -> None:
        self._topic = topic
        self._timeout_s = timeout_s
        self._factory = producer_factory
        self._producer: Producer | None = None

    async def send(self, rows: Sequence[OutboxRow]) -> list[bool]:
        """Produce every row in order and wait for the acks; `True` where the broker acked."""
        try:
            producer = await self._started()
        except KafkaError as exc:
            log.warning("broker unavailable: %r", exc)
            return [False] * len(rows)
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self._timeout_s):
                for row in rows:
                    record = to_record(row)
                    futures.append(await producer.send(
                        self._topic, record.value, key=record.key, headers=record.headers
                    ))
                await asyncio.wait(futures)
        except (TimeoutError, KafkaError) as exc:
            log.warning("producing %d tier changes failed: %r", len(rows), exc)
        acked = [_settle(future) for future in futures]
        return acked + [False] * (len(rows) - len(acked))

    async def close(self) -> None:
        """Stop the producer (flushing what it still holds, within a bound)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer)

    async def _started(self) -> Producer:
        if self._producer is None:
            producer = self._factory()
            try:
                await producer.start()
            except BaseException:
                await _stop_quietly(producer)
                raise
            self._producer = producer
        return self._producer


def _settle(future: asyncio.Future[Any]) -> bool:
    """Whether the broker acked; a pending ack is given up on (it may still land: a duplicate)."""
    if not future.done():
        future.cancel()  # aiokafka ignores a cancelled future; this only drops our interest
        return False
    return not future.cancelled() and future.exception() is None


async def _stop_quietly(producer: Producer) -> None:
    try:
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await producer.stop()
    except (TimeoutError, KafkaError, OSError) as exc:
        log.warning("stopping the producer failed: %r", exc)
