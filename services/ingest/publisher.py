"""The port ingest publishes through, and its Kafka adapter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.ingest.sending import Sent, send_batched, send_each
from shared.errors import BrokerUnavailable
from shared.events import Event
from shared.kafka import ensure_topics, make_producer
from shared.settings import IngestSettings

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 2.0
RECONNECT_MAX_S = 5.0
# Below this, send() per event lets concurrent small requests share the producer's
# lingering batches; above it, building our own per-partition batches costs far less CPU.
BATCH_FROM = 32


class EventPublisher(Protocol):
    """Where accepted events go; `publish` answers per event: None once acknowledged."""

    async def start(self) -> None:
        """Begin connecting; must not fail when the broker is down."""

    async def stop(self) -> None:
        """Flush what is pending and disconnect."""

    async def ready(self) -> bool:
        """The broker answers right now."""

    async def publish(self, events: Sequence[Event]) -> list[BaseException | None]:
        """Send all, then wait for every acknowledgement; one outcome per event, in order."""


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a late outcome as seen, so asyncio does not log it as never retrieved."""
    if not fut.cancelled():
        fut.exception()


class KafkaPublisher:
    """acks=all producer; the process starts (not ready) while the broker is down."""

    def __init__(self, settings: IngestSettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._connected = asyncio.Event()
        self._connecting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Try once now; if the broker is not there, keep trying in the background."""
        if not await self._connect_once():
            self._connecting = asyncio.create_task(self._keep_connecting())

    async def stop(self) -> None:
        """Stop reconnecting, flush pending sends and close the producer."""
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._producer is not None:
            await self._producer.stop()

    async def ready(self) -> bool:
        """Connected, the cluster answers a metadata request within a short deadline, and
        the events topic is there: a broker that came back empty gets it created again
        (ready at the next check, once it is listed)."""
        if self._producer is None:
            return False
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                metadata = await self._producer.client.fetch_all_metadata()
                if self._settings.topic_events in metadata.topics():
                    return True
                log.warning("topic %s is missing (the broker came back empty?): creating it",
                            self._settings.topic_events)
                await ensure_topics(self._settings)
        except (KafkaError, OSError, TimeoutError):
            return False
        return False

    async def publish(self, events: Sequence[Event]) -> list[BaseException | None]:
        """Send every event keyed by customer_id, then await the acks until the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.produce_timeout_s
        if not self._connected.is_set():
            try:
                async with asyncio.timeout_at(deadline):
                    await self._connected.wait()
            except TimeoutError:
                return [BrokerUnavailable("the broker is not reachable")] * len(events)
        sent: Sent = {}
        send = send_batched if len(events) >= BATCH_FROM else send_each
        assert self._producer is not None  # noqa: S101 - _connected is set only with it
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await send(self._producer, self._settings.topic_events, events, sent)
        futures = {f for f in sent.values() if isinstance(f, asyncio.Future)}
        try:
            if futures:
                await asyncio.wait(futures, timeout=max(deadline - loop.time(), 0))
        finally:  # also when the request is cancelled (client gone) while waiting
            for fut in futures:
                if not fut.done():
                    fut.add_done_callback(_retrieve)
        return [_outcome(sent.get(i)) for i in range(len(events))]

    async def _connect_once(self) -> bool:
        """Create the topics and start a producer; False (logged) when the broker is down."""
        producer: AIOKafkaProducer | None = None
        try:
            await ensure_topics(self._settings)
            producer = make_producer(self._settings, client_id="tierflow-ingest")
            await producer.start()
            self._producer, producer = producer, None
        except (KafkaError, OSError) as exc:
            log.warning("broker %s not reachable: %s", self._settings.kafka_bootstrap, exc)
            return False
        finally:
            if producer is not None:  # failed or cancelled half-way: close what was opened
                await producer.stop()
        self._connected.set()
        log.info("connected to broker %s", self._settings.kafka_bootstrap)
        return True

    async def _keep_connecting(self) -> None:
        """Retry with a capped backoff until connected."""
        delay = 0.25
        while True:
            await asyncio.sleep(delay)
            if await self._connect_once():
                return
            delay = min(delay * 2, RECONNECT_MAX_S)


def _outcome(sent: asyncio.Future[Any] | BaseException | None) -> BaseException | None:
    """None when acknowledged; the error, or BrokerUnavailable when no ack came in time."""
    if isinstance(sent, BaseException):
        return sent
    if sent is None or not sent.done() or sent.cancelled():
        return _late()
    return sent.exception()


def _late() -> BrokerUnavailable:
    return BrokerUnavailable("the broker did not acknowledge in time")
