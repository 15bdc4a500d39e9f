"""On the way down: wait until every accepted event is graded and every tier change sent.

Decided on facts, not on metrics: the grader's committed positions in PostgreSQL against
each partition's end on the broker, and the unsent rows of the outbox. (A lag gauge is
missing until partitions are assigned, absent after a crash and stale while a batch is
being graded: the drain that read it said "drained" with every event still ungraded.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from shared.db.engine import asyncpg_dsn
from shared.settings import CommonSettings

POLL_S = 0.25
SAY_EVERY_S = 1.0


@dataclass(frozen=True)
class Pending:
    """What is not done yet: ungraded events per partition, unsent tier changes."""

    ungraded: Mapping[int, int]
    unsent: int

    @property
    def events(self) -> int:
        """Events accepted by the broker and not graded yet."""
        return sum(self.ungraded.values())

    @property
    def done(self) -> bool:
        """Every event graded, every tier change sent."""
        return self.events == 0 and self.unsent == 0


class Ends:
    """Each partition's end on the broker, from fetch responses' high watermarks (Tansu's
    ListOffsets(latest) can report less than the real end)."""

    def __init__(self, settings: CommonSettings) -> None:
        self._topic = settings.topic_events
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, group_id=None,
            enable_auto_commit=False, fetch_max_wait_ms=10, max_partition_fetch_bytes=1024,
            request_timeout_ms=5_000,
        )

    async def __aenter__(self) -> Ends:
        try:
            await self._consumer.start()
            await self._consumer.topics()  # loads the metadata the next line reads
            partitions = self._consumer.partitions_for_topic(self._topic) or set()
            self._partitions = [TopicPartition(self._topic, p) for p in sorted(partitions)]
            self._consumer.assign(self._partitions)
            await self._consumer.seek_to_end(*self._partitions)
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._consumer.stop()

    async def read(self, *, within: float) -> dict[int, int]:
        """The end of every partition (fetches until each has answered once)."""
        deadline = time.monotonic() + within
        while True:
            # Records read are not wanted: only the high watermarks the responses carry.
            await self._consumer.getmany(timeout_ms=100, max_records=1)
            ends = {tp.partition: self._consumer.highwater(tp) for tp in self._partitions}
            if all(end is not None for end in ends.values()):
                return {p: end for p, end in ends.items() if end is not None}
            if time.monotonic() > deadline:
                raise TimeoutError("the broker did not report where its partitions end")


async def pending_work(conn: asyncpg.Connection, topic: str, ends: Mapping[int, int]) -> Pending:
    """Ungraded events per partition (end - committed position) and the unsent outbox."""
    positions = {r["partition"]: r["next_offset"] for r in await conn.fetch(
        "SELECT partition, next_offset FROM consumer_offsets WHERE topic = $1", topic)}
    unsent = await conn.fetchval("SELECT count(*) FROM tier_changes WHERE sent_at IS NULL")
    ungraded = {p: max(end - positions.get(p, 0), 0) for p, end in ends.items()}
    return Pending({p: n for p, n in ungraded.items() if n}, int(unsent))


@contextlib.asynccontextmanager
async def _sources(settings: CommonSettings) -> AsyncIterator[tuple[asyncpg.Connection, Ends]]:
    conn = await asyncpg.connect(asyncpg_dsn(settings.database_url.get_secret_value()),
                                 timeout=5, command_timeout=5)
    try:
        async with Ends(settings) as ends:
            yield conn, ends
    finally:
        await conn.close()


async def drain(
    settings: CommonSettings, *, within: float, wait: bool, forced: Callable[[], bool],
    out: Callable[[str], None], memory_broker: bool,
) -> bool:
    """Until the grader's positions reach every partition's end and the outbox is empty
    (True), or the deadline or a second Ctrl-C (False: says what is at risk). With `wait`
    False (a service is down), only says where things stand."""
    deadline = time.monotonic() + within
    last_said = 0.0
    try:
        async with _sources(settings) as (conn, ends):
            while True:
                pending = await pending_work(
                    conn, settings.topic_events, await ends.read(within=5))
                if pending.done:
                    out("drained: every accepted event is graded and every tier change is sent")
                    return True
                if not wait or forced() or time.monotonic() > deadline:
                    out(at_risk(pending, memory_broker=memory_broker))
                    return False
                if time.monotonic() - last_said >= SAY_EVERY_S:
                    last_said = time.monotonic()
                    out(f"draining: {pending.events:,} events to grade, "
                        f"{pending.unsent:,} tier changes to send")
                await asyncio.sleep(POLL_S)  # polling interval of a deadline-bounded wait
    except (OSError, TimeoutError, KafkaError, asyncpg.PostgresError,
            asyncpg.InterfaceError) as exc:
        lost = " (the embedded broker keeps them in memory only)" if memory_broker else ""
        out(f"cannot tell whether every accepted event was graded ({exc!r}): the last ones "
            f"may not be{lost}")
        return False


def at_risk(pending: Pending, *, memory_broker: bool) -> str:
    """What stopping now leaves undone, and what happens to it."""
    parts = []
    if pending.events:
        where = ", ".join(f"partition {p}: {n:,}" for p, n in sorted(pending.ungraded.items()))
        fate = ("lost: the embedded broker keeps them in memory only" if memory_broker
                else "graded at the next start (they stay on the broker)")
        parts.append(f"{pending.events:,} accepted events not graded ({where}); {fate}")
    if pending.unsent:
        parts.append(f"{pending.unsent:,} tier changes not sent yet (they stay in the "
                     "database and go out at the next start)")
    return "stopping without draining: " + "; ".join(parts)
