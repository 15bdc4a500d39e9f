"""Load → fold → evaluate → save + outbox, one transaction per batch of events."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from services.grader import repository as repo
from services.grader.grading.aggregates import (
    Aggregates,
    apply,
    dedupe,
    from_json,
    prune,
    to_json,
)
from services.grader.grading.evaluate import grade
from services.grader.grading.metrics import compute_metrics
from services.grader.grading.policy import Policy, metrics_read, parse_policy
from services.grader.repository import OffsetAdvance, OutboxRow, StoredCustomer
from services.grader.state import build_message, states_from_json, states_to_json
from shared.events import Event


@dataclass(frozen=True)
class ActivePolicy:
    """A policy version with what grading needs precomputed."""

    version: int
    policy: Policy
    document: dict[str, Any]
    reads: dict[str, tuple[str, ...]] = field(default_factory=dict)
    all_reads: frozenset[str] = frozenset()

    @classmethod
    def from_document(cls, version: int, document: dict[str, Any]) -> ActivePolicy:
        """Parse (validated before it was stored) and index the metrics each ladder reads."""
        policy = parse_policy(document)
        reads = {ladder.name: metrics_read(ladder) for ladder in policy.ladders}
        every = frozenset(name for names in reads.values() for name in names)
        return cls(version, policy, document, reads, every)


@dataclass
class Graded:
    """One customer after grading: the row to save and the messages to record."""

    customer_id: str
    aggregates: dict[str, Any]
    tiers: dict[str, Any]
    outbox: list[OutboxRow]


@dataclass
class BatchOutcome:
    """What one batch did."""

    applied: int = 0
    duplicates: int = 0
    regraded: dict[str, int] = field(default_factory=dict)
    changes: list[OutboxRow] = field(default_factory=list)


def grade_customer(
    stored: StoredCustomer | None, customer_id: str, events: Sequence[Event],
    active: ActivePolicy, *, now: datetime, reason: str,
) -> Graded:
    """Fold new events into a customer and grade them (pure: no I/O)."""
    agg = from_json(stored.aggregates) if stored else Aggregates()
    for event in events:
        apply(agg, event)
    today = now.date()
    prune(agg, today)
    # Only what the conditions read: lookups compute the full set when asked.
    metrics = compute_metrics(agg, today, active.all_reads)
    current = states_from_json(stored.tiers) if stored else {}
    states, changes = grade(active.policy, metrics, current, now=now)
    cause = max(events, key=lambda e: (e.occurred_at, e.event_id)).event_id if events else None
    outbox = []
    for change in changes:
        payload = build_message(
            change, customer_id=customer_id, reason=reason, policy_version=active.version,
            changed_at=now, cause_event_id=cause, metrics=metrics,
            metric_names=active.reads.get(change.ladder, ()),
        )
        outbox.append(OutboxRow(payload["id"], customer_id, change.ladder, change.sequence,
                                change.kind, payload))
    return Graded(customer_id, to_json(agg), states_to_json(states), outbox)


async def apply_batch(
    conn: asyncpg.Connection, *, topic: str, events: Sequence[Event],
    advances: Sequence[OffsetAdvance], active: ActivePolicy, now: datetime,
    cluster_id: str | None = None,
) -> BatchOutcome:
    """Apply a batch exactly once: positions, dedupe, state and outbox commit together."""
    outcome = BatchOutcome()
    async with conn.transaction():
        if advances:
            await repo.advance_offsets(conn, topic, advances, cluster_id=cluster_id)
        if not events:
            return outcome
        by_customer: dict[str, list[Event]] = defaultdict(list)
        unique = {e.event_id: e for e in dedupe(events)}
        stored = {s.customer_id: s for s in await repo.lock_customers(
            conn, list({e.customer_id for e in unique.values()}))}
        fresh = await repo.claim_events(conn, list(unique))
        for event_id in fresh:
            event = unique[event_id]
            by_customer[event.customer_id].append(event)
        outcome.applied = len(fresh)
        outcome.duplicates = len(events) - len(fresh)
        graded = [
            grade_customer(stored.get(cid), cid, evs, active, now=now, reason="event")
            for cid, evs in by_customer.items()
        ]
        await _save(conn, graded, active=active, now=now, outcome=outcome)
    return outcome


async def regrade_due(
    conn: asyncpg.Connection, *, active: ActivePolicy, now: datetime, limit: int
) -> tuple[int, BatchOutcome]:
    """Re-grade one chunk of customers that a newer policy or the passing of days moves."""
    outcome = BatchOutcome()
    async with conn.transaction():
        due = await repo.due_customers(conn, version=active.version, today=now.date(), limit=limit)
        graded = []
        for stored in due:
            reason = "policy" if stored.policy_version != active.version else "schedule"
            outcome.regraded[reason] = outcome.regraded.get(reason, 0) + 1
            graded.append(grade_customer(stored, stored.customer_id, (), active, now=now,
                                         reason=reason))
        await _save(conn, graded, active=active, now=now, outcome=outcome)
    return len(due), outcome


async def _save(
    conn: asyncpg.Connection, graded: Sequence[Graded], *, active: ActivePolicy,
    now: datetime, outcome: BatchOutcome,
) -> None:
    await repo.save_customers(
        conn, [(g.customer_id, g.aggregates, g.tiers) for g in graded],
        version=active.version, today=now.date(), now=now,
    )
    outcome.changes = [row for g in graded for row in g.outbox]
    await repo.record_changes(conn, outcome.changes)
