"""The consume loop: the single writer of the customers of the partitions it owns.

Each poll is validated, routed and folded into the owned customers in memory; a
checkpoint then grades the customers that changed and commits them, their tier changes,
the applied event ids and the new positions in one transaction. Checkpoints come at once
when the consumer is caught up (low latency) and gather up to `checkpoint_max_events`
or `checkpoint_max_ms` while it is behind (throughput). Anything that fails in between
(a fenced commit, a lost database) throws the memory away: the database and the stored
positions are the truth, and replay from them rebuilds the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError
from msgspec.structs import replace

from services.grader import controls, jobs
from services.grader import repository as repo
from services.grader.checkpoints import Graded, Pending, Writer, grade_pending
from services.grader.controls import Control
from services.grader.grading.aggregates import FoldError, apply
from services.grader.grading.customer import CustomerState, is_due, is_due_stored
from services.grader.grading.evaluate import Override
from services.grader.intake import validate
from services.grader.owned import Freezer, OwnedCustomers
from services.grader.policies import PolicyCache
from services.grader.positions import Positions
from services.grader.routing import owner_partition
from services.grader.side_effects import SideEffects
from services.grader.telemetry import GraderMetrics
from shared.db.engine import KEYED_LOOKUPS, Timeouts, close, connect
from shared.events import Event
from shared.kafka import cluster_id, make_consumer
from shared.settings import GraderSettings

log = logging.getLogger(__name__)
POLICY_CHECK_S = 1.0
PRUNE_EVERY_S = 60.0
PRUNE_CHUNK = 10_000
STOP_WAIT_S = 10.0
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real clock (tests pass another to move time)."""
    return datetime.now(UTC)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: Consumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.owner.revoke(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.owner.assign(list(assigned))


class Consumer:
    """Consumes `customer-events`; owns the customers of its partitions."""

    def __init__(self, settings: GraderSettings, *, policies: PolicyCache,
                 metrics: GraderMetrics, clock: Clock = utc_now) -> None:
        self.settings = settings
        self.clock = clock
        self.topic = settings.topic_events
        self.policies = policies
        self.metrics = metrics
        self.owned = OwnedCustomers(settings.state_memory_mb * 1024 * 1024)
        self.positions = Positions(settings.topic_events)
        self.pending = Pending()
        self.lock = asyncio.Lock()  # one of: take, checkpoint, sweep, rebalance
        self.conn: asyncpg.Connection | None = None  # reads; the writer has its own
        # The loop's own commands (checkpoints, partition loads, re-grades) may take
        # longer than a lookup; a dead connection is still noticed within the bound.
        self.timeouts = Timeouts.of(settings, query_s=settings.db_consumer_timeout_s)
        self.writer = Writer(settings.database_url.get_secret_value(), self.timeouts)
        self.consumer: AIOKafkaConsumer | None = None
        self.effects: SideEffects | None = None
        self.partition_count = settings.events_partitions
        self.sweeps: dict[int, repo.Sweep] = {}  # partition -> where its sweep is
        self.swept_for: tuple[int, int] = (0, 0)  # (policy version, day) sweeps are due for
        self.sweeping = False  # the last idle poll re-graded a chunk
        self.last_poll = self.last_commit = self.last_policy_check = time.monotonic()
        self.last_prune = 0.0
        self.freezer = Freezer()
        self.lag: dict[TopicPartition, int] = {}
        metrics.progress_age.set_function(self._progress_age)

    # --- lifecycle ----------------------------------------------------------------------

    def healthy(self, stale_s: float) -> bool:
        """Polling, and committing whenever there is lag (a stuck consumer is not ready)."""
        now = time.monotonic()
        return self.consumer is not None and now - self.last_poll < stale_s \
            and self._progress_age() < stale_s

    def _progress_age(self) -> float:
        """Seconds since the last commit while events wait; 0 when caught up."""
        if sum(self.lag.values()) == 0:
            return 0.0
        return time.monotonic() - self.last_commit

    async def run(self, producer: AIOKafkaProducer) -> None:
        """Consume until cancelled."""
        # Customer states are long-lived: a full collection over them every few thousand
        # allocations would cost more than the grading does.
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
        gc.callbacks.append(self.metrics.on_gc)
        self.conn = await self._connect()
        await self.writer.open()
        await self.policies.load(self.conn)
        self.effects = SideEffects(producer, self.settings)
        self.consumer = make_consumer(
            self.settings, group_id=self.settings.consumer_group, client_id="tierflow-grader")
        self._reset()
        self.consumer.subscribe([self.topic], listener=_Listener(self))
        await self.consumer.start()
        try:
            while True:
                await self.step(self.consumer)
        finally:
            # Stopping (SIGTERM, or a crash): let the checkpoint in flight land if it can;
            # what was not committed is read again by whoever owns the partitions next.
            with contextlib.suppress(repo.Fenced, TimeoutError, *DB_ERRORS):
                await asyncio.wait_for(self.writer.wait(), STOP_WAIT_S)
            await self.writer.close()
            self._reset()
            gc.callbacks.remove(self.metrics.on_gc)
            await self.consumer.stop()
            self.consumer = None
            await close(self.conn)

    def _reset(self) -> None:
        self.positions.clear()
        self.owned.clear()
        self.pending = Pending()
        self.sweeps.clear()
        for tp in list(self.lag):
            self._forget_lag(tp)

    # --- rebalances ----------------------------------------------------------------------

    async def revoke(self, partitions: list[TopicPartition]) -> None:
        """Checkpoint what is pending (it is still ours), then drop the partitions' state."""
        async with self.lock:
            try:
                if not self.pending.empty():
                    await self._checkpoint()
                await self._settle()
            except (repo.Fenced, *DB_ERRORS) as exc:
                log.warning("checkpoint before revoke failed (%s): replay redoes it", exc)
                self._discard_memory()
            self.positions.revoke(partitions)
            self.owned.drop_partitions(tp.partition for tp in partitions)
            for tp in partitions:
                self.sweeps.pop(tp.partition, None)
                self._forget_lag(tp)

    async def assign(self, partitions: list[TopicPartition]) -> None:
        """Position new partitions where their committed state left off."""
        async with self.lock:
            await self._seek_stored(partitions)
            self.swept_for = (0, 0)  # sweep everything held again, the new ones with it
        if self.consumer is not None:
            found = self.consumer.partitions_for_topic(self.topic)
            if found:
                self.partition_count = len(found)

    def _forget_lag(self, tp: TopicPartition) -> None:
        self.lag.pop(tp, None)
        with contextlib.suppress(KeyError):  # never measured
            self.metrics.lag.remove(str(tp.partition))

    async def _seek_stored(self, partitions: list[TopicPartition]) -> None:
        consumer, conn = self.consumer, self.conn
        if consumer is None or conn is None or not partitions:
            return
        cluster = await cluster_id(self.settings)
        stored = await repo.stored_offsets(
            conn, self.topic, [tp.partition for tp in partitions], cluster_id=cluster)
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

    def _discard_memory(self) -> None:
        """Forget everything not committed; the caller re-seeks to the stored positions.
        Sweeps start again too: the chunks thrown away are still due in the database."""
        self.owned.clear()
        self.pending = Pending()
        self.swept_for = (0, 0)

    async def _recover(self) -> None:
        """After a failed commit: memory is the database again, reads restart from it."""
        with contextlib.suppress(repo.Fenced, *DB_ERRORS):
            await self.writer.wait()  # whatever it was, it is over
        self._discard_memory()
        if self.consumer is not None:
            await self._seek_stored(list(self.positions.held()))

    # --- the loop ------------------------------------------------------------------------

    async def step(self, consumer: AIOKafkaConsumer) -> None:
        """One poll, then a checkpoint or a re-grading chunk when it is time."""
        batch_max = self.settings.batch_max_events
        try:
            # Right after a chunk of re-grades (there may be more), take what has arrived
            # and go on; otherwise wait for events.
            wait_ms = 0 if self.sweeping else self.settings.batch_timeout_ms
            self.sweeping = False
            data = await consumer.getmany(timeout_ms=wait_ms, max_records=batch_max)
        except NoOffsetForPartitionError as exc:
            # The fetcher asked Kafka for a committed offset before our seek landed.
            async with self.lock:
                await self._seek_stored([tp for tp in exc.args if isinstance(tp, TopicPartition)])
            return
        except OffsetOutOfRangeError as exc:
            lost = list(exc.args[0]) if exc.args else list(consumer.assignment())
            await self._broker_lost(consumer, lost)
            return
        self.last_poll = time.monotonic()
        polled = sum(len(batch) for batch in data.values())
        try:
            async with self.lock:
                await self._check_positions(consumer)
                held = self.positions.held()
                records = [r for tp, batch in data.items() if tp in held for r in batch]
                if records:
                    await self._take(records)
                caught_up = polled < batch_max and sum(self.lag.values()) < batch_max
                if self._checkpoint_due(caught_up=caught_up):
                    await self._checkpoint()
                elif caught_up:
                    await self._idle_work()
        except repo.Fenced:
            self.metrics.fenced.inc()
            log.warning("checkpoint fenced: another consumer advanced a partition; re-seeking")
            async with self.lock:
                await self._recover()
        except DB_ERRORS as exc:
            log.error("database error, re-reading from the stored positions: %s", exc)
            async with self.lock:
                await self._reconnect()

    async def _connect(self) -> asyncpg.Connection:
        """The read connection (the writer has its own)."""
        return await connect(self.settings.database_url.get_secret_value(),
                             settings=KEYED_LOOKUPS, timeouts=self.timeouts)

    async def _reconnect(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            await close(self.conn)
        self._discard_memory()
        self.conn = await self._connect()
        await self.writer.open()
        await self._recover()

    def _checkpoint_due(self, *, caught_up: bool) -> bool:
        pending = self.pending
        if pending.empty():
            return False
        if caught_up:
            return True
        age_ms = (time.monotonic() - pending.started) * 1000
        return len(pending) >= self.settings.checkpoint_max_events \
            or age_ms >= self.settings.checkpoint_max_ms

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

    async def _broker_lost(self, consumer: AIOKafkaConsumer,
                           partitions: list[TopicPartition]) -> None:
        # The broker does not have what we applied: it was reset (the embedded broker keeps
        # nothing across a restart), or retention removed it. Read again from its oldest
        # message; event_id dedupe makes that safe. The stored position stays the fence.
        for tp in partitions:
            log.error("partition %s: the broker does not have what stored position %s was "
                      "read from (it lost its data); re-reading from the beginning", tp,
                      self.positions.get(tp))
            self.metrics.broker_resets.inc()
        await consumer.seek_to_beginning(*partitions)

    # --- taking a poll -------------------------------------------------------------------

    async def _take(self, records: list[ConsumerRecord]) -> None:
        """Validate, route and fold a poll into the owned customers, events and controls
        in the order of their partition."""
        assert self.conn is not None and self.effects is not None  # noqa: S101 - run() set them
        pending = self.pending
        usable: list[tuple[Event | Control, ConsumerRecord]] = []
        for record in records:
            pending.positions[record.partition] = record.offset + 1
            pending.stamps.append(record.timestamp / 1000)
            item = self._usable(record)
            if item is not None:
                usable.append((item, record))
        if not usable:
            return
        # A customer's salt keys their event ids: load them first (duplicates too).
        await self._load({item.customer_id for item, _ in usable})
        keys = [self._key(item) for item, _ in usable]
        since = self.clock().date() - timedelta(days=self.settings.dedupe_days)
        seen = await repo.seen_events(self.conn, keys, since=since)
        inflight = self.writer.inflight_keys
        erased = False
        for (item, record), key in zip(usable, keys, strict=True):
            if isinstance(item, Event):
                if erased:  # an erasure earlier in this poll may have renewed the salt
                    key = self._key(item)
                fingerprint = repo.event_fingerprint(item)
            else:
                fingerprint = controls.fingerprint(record.value)
                erased = erased or item.kind == "erase"
            applied = pending.applied.get(key, inflight.get(key))
            if key in seen.within or applied is not None:
                self._duplicate(item, record, fingerprint,
                                seen.fingerprints.get(key) if applied is None else applied)
                continue
            if isinstance(item, Event):
                if not self._fold(item, record):
                    continue
                pending.events += 1
            else:
                self._control(item)
            pending.applied[key] = fingerprint
            if key in seen.expired:
                pending.renewed.add(key)

    def _key(self, item: Event | Control) -> str:
        if isinstance(item, Control):
            return repo.event_hash(item.key_id)
        state = self.owned.get(item.customer_id)
        return repo.event_key(item.event_id, state.salt if state is not None else None)

    def _duplicate(self, item: Event | Control, record: ConsumerRecord, fingerprint: int,
                   applied: int | None) -> None:
        """A repeat of an applied id: ignored, and reported when its payload is another
        one (`applied` is the applied one's fingerprint; None for ids stored without)."""
        self.pending.duplicates += 1
        if applied is not None and fingerprint != applied:
            self.pending.conflicts += 1
            log.warning("%s %r came again with another payload (%s/%d/%d); ignored, the "
                        "first one applied stands",
                        "event_id" if isinstance(item, Event) else "control id",
                        item.event_id if isinstance(item, Event) else item.id,
                        record.topic, record.partition, record.offset)

    def _control(self, control: Control) -> None:
        """Apply an admin's write to the customer it names (held: `_load` brought it)."""
        pending, customer_id = self.pending, control.customer_id
        state = self.owned.get(customer_id)
        assert state is not None  # noqa: S101
        if control.kind == "erase":
            # Everything folded so far goes; the row, history and deliveries go with the
            # checkpoint; events after this one start a customer with a new salt.
            if state.graded_on != 0 or customer_id in pending.causes:  # stored or new
                pending.erased[customer_id] = control.requested_at
            pending.causes.pop(customer_id, None)
            pending.swept.discard(customer_id)
            pending.overridden.discard(customer_id)
            self.owned.put(owner_partition(customer_id, self.partition_count),
                           CustomerState.new(customer_id))
            pending.controls.append(control.kind)
            return
        if state.graded_on == 0 and customer_id not in pending.causes:
            log.warning("control %s: customer %r is not known (erased?); ignored",
                        control.id, customer_id)
            return
        assert control.ladder is not None  # noqa: S101 - parse() checked
        if control.kind == "override.set":
            assert control.tier is not None and control.reason is not None  # noqa: S101
            state.overrides[control.ladder] = Override(
                control.tier, control.reason, control.requested_at, control.expires_at)
        elif control.ladder in state.overrides:
            state.overrides[control.ladder] = replace(
                state.overrides[control.ladder], ended=True)
        else:
            return
        pending.overridden.add(customer_id)
        pending.controls.append(control.kind)

    def _usable(self, record: ConsumerRecord) -> Event | Control | None:
        """The record's event or control if this consumer should apply it; otherwise it
        is sent on to the DLQ or to the partition that owns its customer."""
        assert self.effects is not None  # noqa: S101
        item: Event | Control | None
        try:
            if controls.is_control(record.headers):
                item, error, reason = controls.parse(record.value), "", ""
            else:
                item, error, reason = validate(
                    record, currency=self.settings.base_currency,
                    max_future_s=float(self.settings.max_future_seconds))
        except controls.ControlInvalid as exc:
            item, error, reason = None, str(exc), "control"
        except Exception as exc:  # noqa: BLE001 - a poison record must never stall a partition
            item, error, reason = None, f"unreadable: {type(exc).__name__}: {exc}", "unreadable"
        if item is None:
            self.effects.dead_letter(record, error, reason)
            return None
        owner = owner_partition(item.customer_id, self.partition_count)
        if owner != record.partition:
            self.effects.reroute(record, item.customer_id, owner)
            return None
        return item

    async def _load(self, customer_ids: Iterable[str]) -> None:
        """Bring customers not held yet into memory (new ones start empty)."""
        assert self.conn is not None  # noqa: S101
        missing = {cid for cid in customer_ids if cid not in self.owned}
        if not missing:
            return
        stored = await repo.load_customers(self.conn, sorted(missing))
        for customer_id in missing:
            found = stored.get(customer_id)
            state = found.state if found else CustomerState.new(customer_id)
            self.owned.put(owner_partition(customer_id, self.partition_count), state)
        self.metrics.state_loads.labels("stored").inc(len(stored))
        self.metrics.state_loads.labels("new").inc(len(missing) - len(stored))
        self.freezer.loaded()

    def _hold_due(self, partition: int, rows: list[Any], *, version: int,
                  today: date) -> None:
        """Mark the customers of a partition's stored rows (`repository.due_rows`) that a
        newer policy or the day may move as swept; hold those not held yet (what memory
        holds is newer) as passing through, in their stored form (decoded when graded)."""
        owned, swept, loaded = self.owned, self.pending.swept, 0
        for row in rows:
            customer_id = row[0]
            state = owned.peek(customer_id)
            if state is not None:
                # (graded_on 0: erased in memory, its row not deleted yet; nothing to grade.)
                if state.graded_on and is_due(state, version=version, today=today):
                    swept.add(customer_id)
                continue
            held = owned.passing(customer_id)  # re-graded, its write in flight
            stored = repo.stored_of(row) if held is None else held[1]
            if is_due_stored(stored[1], stored[3], version=version, today=today):
                if held is None:
                    owned.pass_through(partition, customer_id, stored)
                    loaded += 1
                swept.add(customer_id)
        self.metrics.state_loads.labels("stored").inc(loaded)

    def _fold(self, event: Event, record: ConsumerRecord) -> bool:
        assert self.effects is not None  # noqa: S101
        pending = self.pending
        state = self.owned.get(event.customer_id)
        assert state is not None  # noqa: S101 - _load brought it in
        try:
            apply(state.aggregates, event)
        except FoldError as exc:
            self.effects.dead_letter(record, str(exc), "fold")
            return False
        cause = (event.occurred_at, event.event_id)
        known = pending.causes.get(event.customer_id)
        if known is None or cause > known:
            pending.causes[event.customer_id] = cause
        return True

    # --- checkpoints ---------------------------------------------------------------------

    async def _checkpoint(self) -> None:
        """Grade what changed and hand it to the writer, after the DLQ and re-routed
        messages are acknowledged (so a crash never skips them). Positions move on at
        once: the next checkpoint starts where this one ends, and if this one fails,
        everything after the stored positions is thrown away and read again."""
        assert self.conn is not None and self.effects is not None  # noqa: S101
        started = time.perf_counter()
        await self.effects.flush()
        active = await self.policies.refresh(self.conn)
        graded = grade_pending(
            self.pending, self.owned, active, now=self.clock(), topic=self.topic,
            advances=self.positions.advances(self.pending.positions),
            partition_of=self.owned.partition)
        self.positions.committed(graded.checkpoint.advances)
        self.pending = Pending()
        await self.writer.wait()  # the one before is durable: its customers may go
        self._evict(keep=graded.customer_ids)
        await self.writer.launch(graded, lambda done: self._committed(done, started))

    async def _settle(self) -> None:
        """Until everything handed to the writer is durable."""
        await self.writer.wait()
        self._evict(keep=())

    def _evict(self, keep: Iterable[str]) -> None:
        """Stay within the memory budget; never evict what is not written yet."""
        evicted = self.owned.evict(keep=self.pending.dirty | set(keep))
        self.metrics.evictions.inc(evicted)
        self.metrics.state_customers.set(len(self.owned))
        self.metrics.state_bytes.set(self.owned.bytes)

    def _committed(self, graded: Graded, started: float) -> None:
        """A checkpoint is durable: count it."""
        self.last_commit = time.monotonic()
        self.owned.resized(graded.customer_ids)
        assert self.effects is not None  # noqa: S101
        pending, m = graded.pending, self.metrics
        dead, rerouted = self.effects.take_counts()
        for reason, n in self.effects.take_reasons().items():
            m.dlq.labels(reason).inc(n)
        m.events.labels("applied").inc(pending.events)
        for kind in pending.controls:
            m.controls.labels(kind).inc()
        m.events.labels("duplicate").inc(pending.duplicates)
        m.conflicting_duplicates.inc(pending.conflicts)
        m.events.labels("dlq").inc(dead)
        m.events.labels("rerouted").inc(rerouted)
        m.batch_size.observe(len(pending))
        m.batch_seconds.observe(time.perf_counter() - started)
        m.observe_end_to_end(pending.stamps, time.time())
        for reason, count in graded.regraded.items():
            m.regraded.labels(reason).inc(count)
        m.count_changes(graded.changes)

    # --- re-grading without events --------------------------------------------------------

    async def _idle_work(self) -> None:
        """Caught up: re-grade a chunk of due customers (its write overlaps reading and
        grading the next chunk: customers in flight are held in memory until it commits),
        or settle and prune old dedupe ids."""
        assert self.conn is not None  # noqa: S101
        now = time.monotonic()
        if now - self.last_policy_check >= POLICY_CHECK_S:
            self.last_policy_check = now
            await self.policies.refresh(self.conn)
        await self._sweep_chunk()
        if not self.pending.empty():
            await self._checkpoint()
            return
        await self._settle()
        if now - self.last_prune >= PRUNE_EVERY_S:
            before = self.clock().date() - timedelta(days=self.settings.dedupe_days)
            pruned = await repo.prune_seen(self.conn, before=before, limit=PRUNE_CHUNK)
            self.metrics.dedupe_pruned.inc(pruned)
            if pruned < PRUNE_CHUNK:  # a full chunk: more are due, go on at the next idle poll
                self.last_prune = now

    async def _sweep_chunk(self) -> None:
        """Re-grade the next chunk of one partition's customers that a newer policy or the
        passing of a day may move; when every partition is done, close finished jobs."""
        assert self.conn is not None  # noqa: S101
        active, today = self.policies.active, self.clock().date()
        due_for = (active.version, today.toordinal())
        if due_for != self.swept_for:  # a new policy, a new day or new partitions
            older = await jobs.regrade_running(self.conn)
            self.sweeps = {tp.partition: repo.Sweep(older) for tp in self.positions.held()}
            self.swept_for = due_for
        finished = False
        while self.sweeps:
            partition, sweep = next(iter(self.sweeps.items()))
            rows, after = await repo.due_rows(self.conn, partition, sweep,
                                              version=active.version, today=today,
                                              limit=self.settings.regrade_chunk)
            if after is not None:
                self.sweeps[partition] = after
                self._hold_due(partition, rows, version=active.version, today=today)
                self.sweeping = True
                return
            del self.sweeps[partition]
            finished = True
        if finished:
            await self._settle()  # the last chunk's customers are written
            await jobs.finish_completed(self.conn, version=active.version)
