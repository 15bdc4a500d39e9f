"""The outbox relay: one leader across instances moves unsent tier changes to Kafka, in order."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import asyncpg
from aiokafka.errors import KafkaError

from services.notifier.messages import OutboxRow, backoff_delay, change_of, relay_seconds
from services.notifier.metrics import NotifierMetrics
from services.notifier.webhooks import store
from services.notifier.webhooks.filters import ERASED, fan_out

log = logging.getLogger(__name__)

# Session advisory lock ("tfnr"): two relays at once could interleave a customer's messages.
LOCK_KEY = 0x74666E72
NOTIFY_CHANNEL = "tierflow_outbox"
LOCK_RETRY_S = 1.0
RECONNECT_S = 1.0
BACKLOG_REFRESH_S = 1.0
CLOSE_TIMEOUT_S = 2.0
# Leadership is a lease: the lock connection is opened with idle_session_timeout at the
# lease (and each command bounded by half of it, see `build_relay`), so PostgreSQL ends a
# leader's session, and releases its lock, once the session has been silent that long,
# even when TCP never reports the leader gone (a blackhole). A live relay is never silent
# that long: it sends a heartbeat every quarter lease while it waits for anything else.
DEFAULT_LEASE_S = 15.0
HEARTBEAT = "SELECT 1"

TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
# The lease has one gap PostgreSQL leaves open: a backend stuck *writing* to a peer that
# stopped reading (a result larger than the socket buffers, sent into a one-way or
# blackholed link, or to a frozen process) is neither idle nor cancelled by
# statement_timeout, and TCP_USER_TIMEOUT only acts when the peer is the dead machine
# itself, not a proxy or a Unix socket. A live leader's commands end within half the
# lease, so a lock holder stuck like that for longer than the lease is gone: the waiting
# relay ends its session (same database role: no special privilege needed).
END_STUCK_LEADER = """
SELECT a.pid, pg_terminate_backend(a.pid) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid = ($1::bigint >> 32)::oid AND l.objid = ($1::bigint & 4294967295)::oid
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND a.state = 'active' AND a.wait_event = 'ClientWrite'
  AND a.state_change < clock_timestamp() - make_interval(secs => $2)
"""
SELECT_UNSENT = (
    "SELECT id, message_id, customer_id, ladder, sequence, kind, payload::text AS payload,"
    " created_at FROM tier_changes WHERE sent_at IS NULL ORDER BY id LIMIT $1"
)
MARK_SENT = """
UPDATE tier_changes SET sent_at = now() WHERE id = ANY($1::bigint[]) RETURNING id
"""
# Answered from the partial index tier_changes_unsent, which holds only unsent rows.
COUNT_UNSENT = "SELECT count(*) FROM tier_changes WHERE sent_at IS NULL"

# A lost database or broker: the relay lets go of everything and starts over.
INTERRUPTIONS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, KafkaError)

Connect = Callable[[], Awaitable[asyncpg.Connection]]
T = TypeVar("T")


class Sender(Protocol):
    """Produces rows in order; says which the broker acknowledged (see `KafkaSender`)."""

    async def send(self, rows: Sequence[OutboxRow]) -> list[bool]: ...

    async def close(self) -> None: ...


class Outcome(enum.Enum):
    """How one relay cycle ended."""

    IDLE = "idle"
    DONE = "done"
    FAILED = "failed"


class Relay:
    """Holds the leader lock on its own connection and relays the outbox while it holds it."""

    def __init__(
        self, *, connect: Connect, sender_factory: Callable[[], Sender],
        metrics: NotifierMetrics, batch: int, idle_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_deliveries: Callable[[], None] = lambda: None, lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        self._clock = clock
        self._lease_s = lease_s
        self._beat_s = lease_s / 4
        self._on_deliveries = on_deliveries
        self._connect = connect
        self._sender_factory = sender_factory
        self._metrics = metrics
        self._batch = batch
        self._idle_s = idle_s
        self._backlog_at = float("-inf")
        self._may_end_stuck = True

    async def run(self) -> None:
        """Relay until cancelled: win the lock, relay while holding it, start over on any loss."""
        while True:
            try:
                await self._session()
            except INTERRUPTIONS as exc:
                log.warning("relay interrupted, starting over: %r", exc)
            finally:
                self._metrics.is_leader.set(0)
            await asyncio.sleep(RECONNECT_S)

    async def _session(self) -> None:
        conn = await self._connect()
        try:
            while not await conn.fetchval(TRY_LOCK, LOCK_KEY):
                await self._end_stuck_leader(conn)
                await self._refresh_backlog(conn)
                await asyncio.sleep(min(LOCK_RETRY_S, self._beat_s))
            log.info("this notifier holds the relay lock and relays the outbox")
            self._metrics.is_leader.set(1)
            await self._lead(conn)
        finally:
            await _close(conn)

    async def _end_stuck_leader(self, conn: asyncpg.Connection) -> None:
        """End the lock holder's session if it has been stuck sending for longer than the
        lease (see END_STUCK_LEADER): the next try for the lock then wins."""
        if not self._may_end_stuck:
            return
        try:
            for pid, ended in await conn.fetch(END_STUCK_LEADER, LOCK_KEY, self._lease_s):
                log.warning(
                    "the relay leader's session (pid %s) was stuck sending for longer than the"
                    " lease (%.1f s): %s", pid, self._lease_s,
                    "ended it" if ended else "could not end it",
                )
        except asyncpg.InsufficientPrivilegeError as exc:
            self._may_end_stuck = False
            log.warning("cannot end a stuck relay leader's session, waiting for it: %s", exc)

    async def _lead(self, conn: asyncpg.Connection) -> None:
        wake = asyncio.Event()
        # NOTIFY only wakes the relay early; polling alone is what makes it correct.
        await conn.add_listener(NOTIFY_CHANNEL, lambda *_: wake.set())
        sender = self._sender_factory()
        failures = 0
        try:
            while True:
                wake.clear()
                outcome = await self._cycle(conn, sender)
                failures = failures + 1 if outcome is Outcome.FAILED else 0
                if outcome is Outcome.IDLE:
                    await self._beating(conn, _wait(wake, self._idle_s))
                elif failures:
                    await self._beating(conn, asyncio.sleep(backoff_delay(failures)))
        finally:
            await sender.close()

    async def _cycle(self, conn: asyncpg.Connection, sender: Sender) -> Outcome:
        """Send the oldest unsent rows; mark sent only those acked before the first failure."""
        records = await conn.fetch(SELECT_UNSENT, self._batch)
        if not records:
            self._set_backlog(0)
            return Outcome.IDLE
        await self._refresh_backlog(conn)
        rows = [OutboxRow(**dict(record)) for record in records]
        if conn.is_closed():
            raise asyncpg.InterfaceError("the relay's lock connection is closed")
        acked = await self._beating(conn, sender.send(rows))
        self._observe(rows, acked)
        sent = [row for row, ok in zip(rows, acked, strict=True) if ok]
        if sent:
            await self._mark_sent(conn, sent)
        return Outcome.DONE if len(sent) == len(rows) else Outcome.FAILED

    async def _mark_sent(self, conn: asyncpg.Connection, rows: Sequence[OutboxRow]) -> None:
        """Mark the rows sent and queue a webhook delivery for each matching subscription,
        in one transaction: the webhook body is then exactly the message on the topic."""
        async with asyncio.timeout(self._lease_s), conn.transaction():
            # Rows an erasure deleted meanwhile are not there any more: not fanned out.
            marked = {r[0] for r in await conn.fetch(MARK_SENT, [row.id for row in rows])}
            subscriptions = [(s.id, s.filter) for s in await store.list_subscriptions(conn)]
            if subscriptions:
                changes = [change_of(row) for row in rows if row.id in marked]
                erased = sorted({c.customer_id for c in changes if c.kind == ERASED})
                informed = await store.informed_of_erasure(conn, erased) if erased else {}
                deliveries = fan_out(changes, subscriptions, informed)
                await store.add_deliveries(conn, deliveries, at=self._clock())
        if subscriptions:
            self._on_deliveries()

    def _observe(self, rows: Sequence[OutboxRow], acked: Sequence[bool]) -> None:
        now = datetime.now(UTC)
        for row, ok in zip(rows, acked, strict=True):
            self._metrics.messages.labels(row.kind, "sent" if ok else "failed").inc()
            if ok:
                self._metrics.relay_seconds.observe(relay_seconds(row.created_at, now))

    async def _refresh_backlog(self, conn: asyncpg.Connection) -> None:
        if time.monotonic() - self._backlog_at >= BACKLOG_REFRESH_S:
            self._set_backlog(await conn.fetchval(COUNT_UNSENT))

    def _set_backlog(self, count: int) -> None:
        self._metrics.backlog.set(count)
        self._backlog_at = time.monotonic()

    async def _beating(self, conn: asyncpg.Connection, work: Awaitable[T]) -> T:
        """Await `work` (which does not use `conn`) while keeping the lease alive: a
        heartbeat every quarter lease. A failed heartbeat abandons the work."""
        task = asyncio.ensure_future(work)
        try:
            while not (await asyncio.wait({task}, timeout=self._beat_s))[0]:
                await conn.execute(HEARTBEAT)
            return task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until `event` is set or `seconds` pass, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def _close(conn: asyncpg.Connection) -> None:
    """Close the connection (releasing the lock); a dead one is just dropped."""
    if conn.is_closed():
        return
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await conn.close()
    except INTERRUPTIONS:
        conn.terminate()
