"""Load → fold → evaluate → save + outbox, one transaction per batch of events."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from services.grader import jobs
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
from services.grader.policies import ActivePolicy, PolicyCache
from services.grader.repository import OffsetAdvance, OutboxRow, StoredCustomer
from services.grader.state import build_message, states_from_json, states_to_json
from shared.events import Event

EMPTY = to_json(Aggregates())


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
    advances: Sequence[OffsetAdvance], policies: PolicyCache, now: datetime,
) -> BatchOutcome:
    """Apply a batch exactly once: positions, dedupe, state and outbox commit together."""
    outcome = BatchOutcome()
    async with conn.transaction():
        if advances:
            await repo.advance_offsets(conn, topic, advances)
        if not events:
            return outcome
        unique = {e.event_id: e for e in dedupe(events)}
        customer_ids = sorted({e.customer_id for e in unique.values()})
        await repo.hold_places(conn, customer_ids, empty=EMPTY, today=now.date())
        stored = {s.customer_id: s for s in await repo.load_customers(conn, customer_ids)
                  if s.policy_version != 0}
        # Read after the locks: a policy stored since then cannot have re-graded these rows.
        active = await policies.refresh(conn)
        fresh = await repo.claim_events(conn, list(unique))
        by_customer: dict[str, list[Event]] = defaultdict(list)
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
        await repo.drop_places(
            conn, [c for c in customer_ids if c not in stored and c not in by_customer])
    return outcome


async def regrade_due(
    conn: asyncpg.Connection, *, active: ActivePolicy, now: datetime, limit: int,
    after: str = "",
) -> tuple[list[str], BatchOutcome]:
    """Re-grade one chunk of customers that a newer policy or the passing of days moves;
    returns the ids re-graded (in order) and what it did."""
    outcome = BatchOutcome()
    async with conn.transaction():
        due = await repo.due_customers(
            conn, version=active.version, today=now.date(), limit=limit, after=after)
        graded = []
        for stored in due:
            reason = "policy" if stored.policy_version != active.version else "schedule"
            outcome.regraded[reason] = outcome.regraded.get(reason, 0) + 1
            graded.append(grade_customer(stored, stored.customer_id, (), active, now=now,
                                         reason=reason))
        await _save(conn, graded, active=active, now=now, outcome=outcome)
        # Job progress commits with the re-grades it counts; daily sweeps are not a job.
        policy_moved = {r.customer_id for r in outcome.changes
                        if r.kind == "tier.changed" and r.payload["reason"] == "policy"}
        if outcome.regraded.get("policy"):
            await jobs.progress(conn, done=outcome.regraded["policy"],
                                changed=len(policy_moved), version=active.version)
    return [s.customer_id for s in due], outcome


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
