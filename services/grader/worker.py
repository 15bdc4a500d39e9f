"""The consume loop: batches from Kafka, graded and committed in PostgreSQL with positions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.grader import repository as repo
from services.grader.handler import BatchOutcome, apply_batch
from services.grader.intake import validate
from services.grader.metrics import GraderMetrics
from services.grader.policies import PolicyCache
from services.grader.positions import Positions
from services.grader.repository import Fenced, OffsetAdvance
from shared.db.engine import raw
from shared.errors import TierflowError
from shared.events import Event
from shared.kafka import cluster_id, make_consumer
from shared.settings import GraderSettings

log = logging.getLogger(__name__)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Seeks every newly assigned partition to the position stored with the state."""

    def __init__(self, worker: GraderWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.worker.release(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.worker.seek_stored(list(assigned))


class GraderWorker:
    """Consumes `customer-events` and applies each batch exactly once."""

    def __init__(
        self, settings: GraderSettings, *, engine: AsyncEngine, policies: PolicyCache,
        metrics: GraderMetrics, producer: AIOKafkaProducer | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.policies = policies
        self.metrics = metrics
        self.producer = producer
        self.positions = Positions(settings.topic_events)
        self.consumer: AIOKafkaConsumer | None = None
        self.last_poll = self.last_commit = time.monotonic()
        self.lag: dict[TopicPartition, int] = {}
        self._max_future = float(settings.max_future_seconds)

    def healthy(self, stale_s: float) -> bool:
        """Polling, and committing whenever there is lag (a stuck consumer is not ready)."""
        now = time.monotonic()
        stuck = sum(self.lag.values()) > 0 and now - self.last_commit > stale_s
        return self.consumer is not None and now - self.last_poll < stale_s and not stuck

    async def run(self) -> None:
        """Consume until cancelled."""
        self.consumer = make_consumer(
            self.settings, group_id=self.settings.consumer_group, client_id="tierflow-grader"
        )
        self.positions.clear()
        self.consumer.subscribe([self.settings.topic_events], listener=_Listener(self))
        await self.consumer.start()
        try:
            while True:
                await self._poll_once(self.consumer)
        finally:
            self.release(list(self.positions.held()))
            await self.consumer.stop()

    def release(self, partitions: list[TopicPartition]) -> None:
        """Forget partitions this consumer no longer holds (and their lag gauges)."""
        self.positions.revoke(partitions)
        for tp in partitions:
            self.lag.pop(tp, None)
            with contextlib.suppress(KeyError):  # never measured
                self.metrics.lag.remove(str(tp.partition))

    async def _poll_once(self, consumer: AIOKafkaConsumer) -> None:
        try:
            data = await consumer.getmany(
                timeout_ms=self.settings.batch_timeout_ms,
                max_records=self.settings.batch_max_events,
            )
        except NoOffsetForPartitionError as exc:
            # The fetcher asked Kafka for a committed offset before our listener's seek (it
            # awaits the database) landed. Our positions live in PostgreSQL: seek there.
            await self.seek_stored([tp for tp in exc.args if isinstance(tp, TopicPartition)])
            return
        except OffsetOutOfRangeError as exc:
            # Real Kafka: the stored position is outside the log (reset broker or retention).
            lost = list(exc.args[0]) if exc.args else list(consumer.assignment())
            await self._broker_lost(consumer, lost)
            return
        self.last_poll = time.monotonic()
        held = self.positions.held()
        # A held partition without a known position (its listener call failed): position
        # it now, and drop what was fetched for it: the seek makes it come again.
        unknown = set(consumer.assignment()) - held
        if unknown:
            await self.seek_stored(list(unknown))
        await self._check_positions(consumer)
        records = [r for tp, batch in data.items() if tp in held for r in batch]
        if records:
            await self.handle(records)

    async def seek_stored(self, partitions: list[TopicPartition]) -> None:
        """Position partitions where the committed state left off, on this same cluster."""
        consumer = self.consumer
        if consumer is None or not partitions:
            return
        cluster = await cluster_id(self.settings)
        async with self.engine.connect() as sa_conn:
            stored = await repo.stored_offsets(
                await raw(sa_conn), self.settings.topic_events,
                [tp.partition for tp in partitions], cluster_id=cluster,
            )
        elsewhere = []
        for tp in partitions:
            position, stored_cluster = stored[tp.partition]
            self.positions.assign(tp, position, cluster)  # the fence, whatever we read next
            if stored_cluster and cluster and stored_cluster != cluster:
                elsewhere.append(tp)
            else:
                consumer.seek(tp, position)
        if elsewhere:
            log.error("the broker cluster is not the one our positions were read on "
                      "(now %s)", cluster)
            await self._broker_lost(consumer, elsewhere)

    async def _check_positions(self, consumer: AIOKafkaConsumer) -> None:
        lost = []
        for tp in set(consumer.assignment()) & self.positions.held():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            if position > highwater:
                lost.append(tp)
            self.lag[tp] = max(highwater - position, 0)
            self.metrics.lag.labels(str(tp.partition)).set(self.lag[tp])
        if lost:
            await self._broker_lost(consumer, lost)

    async def _broker_lost(
        self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
    ) -> None:
        # The broker does not have what we applied: it was reset (the embedded broker keeps
        # nothing across a restart), or retention removed it. Read again from its oldest
        # message (not offset 0, which retention may have removed); event_id dedupe makes
        # that safe. The stored position stays the fence until the next commit.
        for tp in partitions:
            log.error(
                "partition %s: the broker does not have what stored position %s was read "
                "from (it lost its data); re-reading from the beginning", tp,
                self.positions.get(tp),
            )
            self.metrics.broker_resets.inc()
        await consumer.seek_to_beginning(*partitions)

    async def handle(self, records: list[ConsumerRecord]) -> None:
        """Validate, dead-letter the unusable, apply the rest with the new positions."""
        started = time.perf_counter()
        generation = self.positions.generation
        async with self.engine.connect() as sa_conn:
            active = await self.policies.refresh(await raw(sa_conn))
        events: list[Event] = []
        stamps: list[float] = []
        rejects: list[tuple[ConsumerRecord, str]] = []
        for record in records:
            event, error = validate(record, currency=active.policy.base_currency,
                                    max_future_s=self._max_future)
            if event is None:
                rejects.append((record, error))
            else:
                events.append(event)
                stamps.append(record.timestamp / 1000)
        advances = self.positions.advances(records)
        if rejects:
            await self._dead_letter(rejects)
        try:
            outcome = await self._commit(events, advances)
        except Fenced:
            self.metrics.fenced.inc()
            log.warning("batch fenced: another consumer advanced the partition; re-seeking")
            if self.consumer is not None:
                await self.seek_stored(list(self.consumer.assignment()))
            return
        self.positions.committed(advances, generation=generation)
        self.last_commit = time.monotonic()
        self._observe(outcome, len(records), len(rejects), stamps, started)

    async def _commit(self, events: list[Event], advances: list[OffsetAdvance]) -> BatchOutcome:
        async with self.engine.connect() as sa_conn:
            return await apply_batch(
                await raw(sa_conn), topic=self.settings.topic_events, events=events,
                advances=advances, policies=self.policies, now=datetime.now(UTC),
            )

    async def _dead_letter(self, rejects: list[tuple[ConsumerRecord, str]]) -> None:
        if self.producer is None:
            raise TierflowError("the DLQ producer starts with the app")
        futures = []
        for record, error in rejects:
            headers = [
                ("tierflow-error", error[:1000].encode()),
                ("tierflow-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
            ]
            futures.append(await self.producer.send(
                self.settings.topic_dlq, value=record.value, key=record.key, headers=headers
            ))
        await asyncio.gather(*futures)  # acknowledged before the positions move past them

    def _observe(self, outcome: BatchOutcome, consumed: int, rejected: int,
                 stamps: list[float], started: float) -> None:
        m = self.metrics
        m.events.labels("applied").inc(outcome.applied)
        m.events.labels("duplicate").inc(outcome.duplicates)
        m.events.labels("dlq").inc(rejected)
        m.batch_size.observe(consumed)
        m.batch_seconds.observe(time.perf_counter() - started)
        now = time.time()
        for stamp in stamps:
            m.end_to_end.observe(max(now - stamp, 0.0))
        m.count_changes(row.payload for row in outcome.changes)
