"""The consume loop: batches from Kafka, graded and committed in PostgreSQL with positions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.grader import repository as repo
from services.grader.handler import BatchOutcome, apply_batch
from services.grader.metrics import GraderMetrics
from services.grader.policies import PolicyCache
from services.grader.repository import Fenced, OffsetAdvance
from shared.db.engine import raw
from shared.events import Event, parse_event
from shared.kafka import cluster_id, make_consumer
from shared.settings import GraderSettings

log = logging.getLogger(__name__)


class _Positions(ConsumerRebalanceListener):  # type: ignore[misc]
    """Seeks every newly assigned partition to the position stored with the state."""

    def __init__(self, worker: GraderWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        for tp in revoked:
            self.worker.expected.pop(tp, None)

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
        self.expected: dict[TopicPartition, int] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.cluster_id: str | None = None
        self.last_poll = time.monotonic()
        self._max_future = float(settings.max_future_seconds)

    def polled_within(self, seconds: float) -> bool:
        """Whether the loop fetched recently (a stuck consumer is not ready)."""
        return time.monotonic() - self.last_poll < seconds

    async def run(self) -> None:
        """Consume until cancelled."""
        self.consumer = make_consumer(
            self.settings, group_id=self.settings.consumer_group, client_id="tierflow-grader"
        )
        self.consumer.subscribe([self.settings.topic_events], listener=_Positions(self))
        await self.consumer.start()
        try:
            while True:
                await self._poll_once(self.consumer)
        finally:
            await self.consumer.stop()

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
            lost = list(exc.args[0]) if exc.args else list(self.expected)
            await self._broker_lost(consumer, lost)
            return
        self.last_poll = time.monotonic()
        await self._check_positions(consumer)
        records = [r for tp, batch in data.items() if tp in self.expected for r in batch]
        if records:
            await self.handle(records)

    async def seek_stored(self, partitions: list[TopicPartition]) -> None:
        """Position partitions where the committed state left off, on this same cluster."""
        assert self.consumer is not None  # noqa: S101
        self.cluster_id = await cluster_id(self.settings)
        async with self.engine.connect() as sa_conn:
            conn = await raw(sa_conn)
            stored = await repo.stored_offsets(
                conn, self.settings.topic_events, [tp.partition for tp in partitions],
                cluster_id=self.cluster_id,
            )
        other_cluster = []
        for tp in partitions:
            position, stored_cluster = stored[tp.partition]
            self.expected[tp] = position  # the fence, whatever we read next
            if stored_cluster and self.cluster_id and stored_cluster != self.cluster_id:
                other_cluster.append(tp)
            else:
                self.consumer.seek(tp, position)
        if other_cluster:
            log.error("the broker cluster changed from the one our positions were read on "
                      "(now %s)", self.cluster_id)
            await self._broker_lost(self.consumer, other_cluster)

    async def _check_positions(self, consumer: AIOKafkaConsumer) -> None:
        lost = []
        for tp in list(self.expected):
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            if position > highwater:
                lost.append(tp)
            self.metrics.lag.labels(str(tp.partition)).set(max(highwater - position, 0))
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
                self.expected.get(tp),
            )
            self.metrics.broker_resets.inc()
        await consumer.seek_to_beginning(*partitions)

    async def handle(self, records: list[ConsumerRecord]) -> None:
        """Validate, dead-letter the unusable, apply the rest with the new positions."""
        started = time.perf_counter()
        active = self.policies.active
        events: list[Event] = []
        stamps: list[float] = []
        rejects: list[tuple[ConsumerRecord, str]] = []
        for record in records:
            event, error = self._validate(record, active.policy.base_currency)
            if event is None:
                rejects.append((record, error))
            else:
                events.append(event)
                stamps.append(record.timestamp / 1000)
        advances = self._advances(records)
        if rejects:
            await self._dead_letter(rejects)
        try:
            outcome = await self._commit(events, advances)
        except Fenced:
            self.metrics.fenced.inc()
            log.warning("batch fenced: another consumer advanced the partition; re-seeking")
            await self.seek_stored(list(self.expected))
            return
        for advance in advances:
            # Not max(): after a broker reset the new position is lower than the old one.
            self.expected[TopicPartition(self.settings.topic_events, advance.partition)] = (
                advance.new
            )
        self._observe(outcome, len(records), len(rejects), stamps, started)

    async def _commit(self, events: list[Event], advances: list[OffsetAdvance]) -> BatchOutcome:
        now = datetime.now(UTC)
        async with self.engine.connect() as sa_conn:
            conn = await raw(sa_conn)
            active = await self.policies.refresh(conn)
            return await apply_batch(
                conn, topic=self.settings.topic_events, events=events, advances=advances,
                active=active, now=now, cluster_id=self.cluster_id,
            )

    def _advances(self, records: list[ConsumerRecord]) -> list[OffsetAdvance]:
        last: dict[int, int] = {}
        for record in records:
            last[record.partition] = max(last.get(record.partition, -1), record.offset)
        topic = self.settings.topic_events
        return [
            OffsetAdvance(p, self.expected[TopicPartition(topic, p)], offset + 1)
            for p, offset in sorted(last.items())
        ]

    def _validate(self, record: ConsumerRecord, currency: str) -> tuple[Event | None, str]:
        if record.value is None:
            return None, "empty message value"
        try:
            event = parse_event(record.value)
        except ValidationError as exc:
            return None, _summary(exc)
        # Plain epoch seconds: cheaper than building datetimes for every record.
        if event.occurred_at.timestamp() > record.timestamp / 1000 + self._max_future:
            return None, "occurred_at: more than the allowed skew ahead of the message time"
        if event.type in ("purchase", "refund") and event.data.currency != currency:
            return None, f"data.currency: must be the policy's base currency {currency}"
        return event, ""

    async def _dead_letter(self, rejects: list[tuple[ConsumerRecord, str]]) -> None:
        assert self.producer is not None, "the DLQ producer starts with the app"  # noqa: S101
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


def _summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
