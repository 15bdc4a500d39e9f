"""The port ingest publishes through, and its Kafka adapter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.errors import BrokerUnavailable
from shared.events import Event, event_json
from shared.kafka import ensure_topics, make_producer
from shared.settings import IngestSettings

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 2.0
RECONNECT_MAX_S = 5.0


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


def _retrieve(fut: asyncio.Future[object]) -> None:
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
        """Connected, and the cluster answers a metadata request within a short deadline."""
        if self._producer is None:
            return False
        try:
            await asyncio.wait_for(
                self._producer.client.fetch_all_metadata(), READY_TIMEOUT_S
            )
        except (KafkaError, OSError, TimeoutError):
            return False
        return True

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
        sent: list[asyncio.Future[object] | BaseException] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self._enqueue(events, sent)
        futures = [f for f in sent if isinstance(f, asyncio.Future)]
        if futures:
            await asyncio.wait(futures, timeout=max(deadline - loop.time(), 0))
        return [_outcome(sent[i]) if i < len(sent) else _late() for i in range(len(events))]

    async def _enqueue(
        self, events: Sequence[Event], sent: list[asyncio.Future[object] | BaseException]
    ) -> None:
        """Hand each event to the producer's batches; `sent` fills in as it goes."""
        assert self._producer is not None  # noqa: S101 - _connected is set only with it
        producer, topic = self._producer, self._settings.topic_events
        for event in events:
            try:
                fut = await producer.send(
                    topic, value=event_json(event), key=event.customer_id.encode()
                )
            except KafkaError as exc:
                sent.append(exc)
            else:
                sent.append(fut)

    async def _connect_once(self) -> bool:
        """Create the topics and start a producer; False (logged) when the broker is down."""
        producer: AIOKafkaProducer | None = None
        try:
            await ensure_topics(self._settings)
            producer = make_producer(self._settings, client_id="tierflow-ingest")
            await producer.start()
        except (KafkaError, OSError) as exc:
            log.warning("broker %s not reachable: %s", self._settings.kafka_bootstrap, exc)
            if producer is not None:
                await producer.stop()
            return False
        self._producer = producer
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


def _outcome(sent: asyncio.Future[object] | BaseException) -> BaseException | None:
    """None when acknowledged; the error, or BrokerUnavailable when no ack came in time."""
    if isinstance(sent, BaseException):
        return sent
    if not sent.done():
        sent.add_done_callback(_retrieve)
        return _late()
    return _late() if sent.cancelled() else sent.exception()


def _late() -> BrokerUnavailable:
    return BrokerUnavailable("the broker did not acknowledge in time")
