"""Checkpoints: grade what a consumer changed since the last one, and commit it.

`Pending` is what the consumer read and folded since the last checkpoint. `grade_pending`
turns it into a `Checkpoint` (states encoded, messages built) while the states are still
consistent; the `Writer` then commits it on its own connection while the consumer goes
on reading and folding the next poll (one checkpoint in flight at a time): the Python work
of the next checkpoint overlaps the database work of this one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from services.grader import repository as repo
from services.grader.grading.customer import Reason, TierChange, grade_customer
from services.grader.grading.policy import ActivePolicy
from services.grader.owned import OwnedCustomers
from shared.db.engine import KEYED_LOOKUPS, Timeouts, close, connect


@dataclass
class Pending:
    """What has been read and folded since the last checkpoint."""

    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset
    # Keys (`repository.event_key`) of the events and controls applied -> fingerprint.
    applied: dict[str, int] = field(default_factory=dict)
    renewed: set[str] = field(default_factory=set)  # keys of those seen before the window
    causes: dict[str, tuple[datetime, str]] = field(default_factory=dict)  # latest event
    swept: set[str] = field(default_factory=set)  # re-graded without an event
    overridden: set[str] = field(default_factory=set)  # an override set or removed
    erased: dict[str, datetime] = field(default_factory=dict)  # when asked, in order
    stamps: list[float] = field(default_factory=list)  # Kafka timestamps (s) of records
    events: int = 0  # events applied (the rest of `applied` are controls)
    controls: list[str] = field(default_factory=list)  # kinds of the controls applied
    duplicates: int = 0
    conflicts: int = 0  # of the duplicates, those with another payload than the one applied
    started: float = field(default_factory=time.monotonic)

    def __len__(self) -> int:
        return len(self.stamps)

    @property
    def dirty(self) -> set[str]:
        """Customers to grade and write."""
        return set(self.causes) | self.swept | self.overridden

    def empty(self) -> bool:
        """Nothing to commit."""
        return not self.positions and not self.swept


@dataclass
class Graded:
    """A pending checkpoint, graded: what to write and what it did."""

    checkpoint: repo.Checkpoint
    pending: Pending
    changes: list[TierChange]
    regraded: dict[str, int]
    customer_ids: set[str]


def grade_pending(
    pending: Pending, owned: OwnedCustomers, active: ActivePolicy, *, now: datetime,
    topic: str, advances: list[repo.OffsetAdvance], partition_of: Callable[[str], int],
) -> Graded:
    """Grade every customer the pending work touched and encode the checkpoint. A
    customer passing through (a sweep's) is decoded, graded and encoded in one go, and
    held on in its new stored form: its objects are freed while still in the caches."""
    today = now.date()
    changes: list[TierChange] = []
    regraded: dict[str, int] = {}
    rows = []
    for customer_id in sorted(pending.dirty):
        state = owned.peek(customer_id)  # (an event or a control has just used it)
        passing = None
        if state is None:
            passing = owned.passing(customer_id)
            if passing is None:
                continue
            state = repo.decode_state(customer_id, *passing[1])
        cause = pending.causes.get(customer_id)
        reason: Reason = "event"
        if cause is None:
            # (A change on an overridden ladder says "override" whatever this says.)
            reason = "policy" if state.policy_version != active.version else "schedule"
            if customer_id not in pending.overridden:
                regraded[reason] = regraded.get(reason, 0) + 1
        # The exact day is worked out by re-grades without an event; one caused by events
        # (a checkpoint under load grades thousands) says "tomorrow" (see grade_customer).
        changes += grade_customer(state, active, now=now, today=today, reason=reason,
                                  cause_event_id=cause[1] if cause else None,
                                  schedule="next_day" if cause else "exact")
        partition = partition_of(customer_id) if passing is None else passing[0]
        row = repo.customer_row(partition, state, now)
        rows.append(row)
        if passing is not None:  # held on re-graded, still without objects
            owned.pass_through(partition, customer_id, repo.stored_form(row))
    moved = {tc.customer_id for tc in changes
             if tc.reason == "policy" and tc.change.kind == "tier.changed"}
    checkpoint = repo.Checkpoint.build(
        topic=topic, advances=advances, event_keys=pending.applied.items(),
        renewed=pending.renewed, customer_rows=rows,
        changes=changes, now=now, policy_regrades=regraded.get("policy", 0),
        policy_changed=len(moved), policy_version=active.version,
        erased=list(pending.erased.items()))
    return Graded(checkpoint, pending, changes, regraded,
                  {row[0] for row in rows} | set(pending.erased))


class Writer:
    """Commits checkpoints on a connection of its own, one at a time."""

    def __init__(self, database_url: str, timeouts: Timeouts) -> None:
        self.database_url = database_url
        self.timeouts = timeouts
        self.conn: asyncpg.Connection | None = None
        self.inflight: asyncio.Task[None] | None = None
        # Keys applied by the checkpoint in flight -> their fingerprint.
        self.inflight_keys: dict[str, int] = {}

    async def open(self) -> None:
        """Connect (again) and prepare the staging table."""
        await self.close()
        self.conn = await connect(self.database_url, settings=KEYED_LOOKUPS,
                                  timeouts=self.timeouts)
        await repo.prepare(self.conn)

    async def close(self) -> None:
        """Forget what is in flight and disconnect."""
        if self.inflight is not None:
            self.inflight.cancel()
            await asyncio.gather(self.inflight, return_exceptions=True)
        self.inflight, self.inflight_keys = None, {}
        if self.conn is not None and not self.conn.is_closed():
            await close(self.conn)
        self.conn = None

    async def wait(self) -> None:
        """Until the checkpoint in flight is durable; raises what its commit raised."""
        task, self.inflight = self.inflight, None
        try:
            if task is not None:
                await task
        finally:
            self.inflight_keys = {}

    async def launch(self, graded: Graded, committed: Callable[[Graded], None]) -> None:
        """Start committing `graded` (after the one in flight); `committed` runs once it
        is durable."""
        await self.wait()
        assert self.conn is not None  # noqa: S101 - open() first
        self.inflight_keys = graded.pending.applied
        self.inflight = asyncio.create_task(self._write(self.conn, graded, committed))

    @staticmethod
    async def _write(conn: asyncpg.Connection, graded: Graded,
                     committed: Callable[[Graded], None]) -> None:
        await repo.write_checkpoint(conn, graded.checkpoint)
        committed(graded)

