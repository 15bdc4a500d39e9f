"""The pure step of grading one customer: fold events, slide windows, grade every ladder,
and describe each tier change as a message (domain objects; the repository stores them)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Literal

import msgspec

from services.grader.grading.aggregates import Aggregates, advance, apply
from services.grader.grading.evaluate import Change, LadderState, Override, grade
from services.grader.grading.metrics import Metrics, compute_metrics
from services.grader.grading.policy import ActivePolicy
from services.grader.grading.schedule import grace_end_days, next_due
from shared.events import Event

Reason = Literal["event", "schedule", "policy", "override"]
SALT_BYTES = 16


@dataclass(slots=True)
class CustomerState:
    """Everything held about one customer: figures, where they stand on each ladder, and
    the policy version and UTC day (ordinal) of their last grading."""

    customer_id: str
    aggregates: Aggregates = field(default_factory=Aggregates)
    ladders: dict[str, LadderState] = field(default_factory=dict)
    policy_version: int = 0
    graded_on: int = 0
    # The first UTC day (ordinal) on which time alone may move the customer; None: only
    # an event, a policy or an override can.
    due_on: int | None = None
    # Ladder -> an admin's pin (see `evaluate.Override`).
    overrides: dict[str, Override] = field(default_factory=dict)
    # The key of this customer's event ids in the dedupe table (`repository.event_key`):
    # random per customer, so erasing the customer leaves those records unreadable. None
    # for customers stored before it existed (their ids are hashed without a key).
    salt: bytes | None = None

    @classmethod
    def new(cls, customer_id: str) -> CustomerState:
        """A customer seen for the first time (or again after an erasure)."""
        return cls(customer_id, salt=os.urandom(SALT_BYTES))


class TierChange(msgspec.Struct, frozen=True, gc=False):
    """A recorded change (or scheduled downgrade) as subscribers will receive it."""

    message_id: str
    customer_id: str
    change: Change
    reason: Reason
    policy_version: int
    changed_at: datetime
    cause_event_id: str | None
    metrics: Metrics


def fold(state: CustomerState, events: Iterable[Event]) -> CustomerState:
    """Apply events to a customer's figures (see `aggregates.apply`)."""
    for event in events:
        apply(state.aggregates, event)
    return state


def is_due(state: CustomerState, *, version: int, today: date) -> bool:
    """True when a newer policy, or the day time alone may move them, has come."""
    return state.policy_version != version or (
        state.due_on is not None and state.due_on <= today.toordinal())


def is_due_stored(policy_version: int, due_on: date | None, *, version: int,
                  today: date) -> bool:
    """`is_due` of a stored customer, from its row's columns."""
    return policy_version != version or (due_on is not None and due_on <= today)


Schedule = Literal["exact", "next_day", "none"]


def grade_customer(
    state: CustomerState, active: ActivePolicy, *, now: datetime, today: date,
    reason: Reason, cause_event_id: str | None = None, schedule: Schedule = "exact",
) -> list[TierChange]:
    """Grade a customer on every ladder as of `today`, updating the state in place; the
    changes it records. `schedule` sets `due_on`: `exact`, the first day time alone may
    change an answer (`schedule.next_due`, tens of µs); `next_day`, tomorrow, when anything
    can change with time at all (the owner's checkpoints, under a stream of events: that
    re-grade works out the exact day, once a day per active customer instead of at every
    checkpoint); `none` leaves it (a what-if that is never stored)."""
    advance(state.aggregates, today.toordinal())
    # Only what the conditions read: lookups compute the full set when asked.
    metrics = compute_metrics(state.aggregates, today, active.all_reads)
    overrides = state.overrides
    state.ladders, changes = grade(active.policy, metrics, state.ladders, now=now,
                                   overrides=overrides)
    # A change on a ladder that had an override (set, removed or expired) is the
    # override's doing; the rules cannot move a pinned ladder.
    pinned = set(overrides)
    if overrides:
        # Over, or naming a tier its ladder no longer has (released above): dropped, so
        # that a tier coming back later does not pin the customer again by surprise.
        ladders = {ladder.name: ladder for ladder in active.policy.ladders}
        state.overrides = {
            name: o for name, o in overrides.items()
            if not o.over(now) and (name not in ladders or ladders[name].rank(o.tier) is not None)
        }
    state.policy_version = active.version
    state.graded_on = day = today.toordinal()
    if schedule != "none":
        pending = {name: s.pending_since for name, s in state.ladders.items()
                   if s.pending_since is not None}
        ends = override_end_days(state.overrides.values())
        if schedule == "exact":
            state.due_on = next_due(state.aggregates, active.timing, day,
                                    grace_end_days(pending, active.grace_days) + ends)
        else:
            timed = active.timing.windowed or active.timing.counted or pending or ends
            state.due_on = day + 1 if timed else None
    return [
        TierChange(
            message_id(), state.customer_id, change,
            "override" if change.ladder in pinned else reason, active.version, now,
            cause_event_id, {name: metrics[name] for name in active.reads[change.ladder]},
        )
        for change in changes
    ]


# The variant nibble of an RFC 4122 UUID (binary 10xx) for each hex digit drawn.
_VARIANT = {f"{n:x}": f"{8 + (n & 3):x}" for n in range(16)}


def _message_ids() -> Iterator[str]:
    while True:
        pool = os.urandom(16 * 256).hex()  # 256 ids a draw
        for i in range(0, len(pool), 32):
            h = pool[i:i + 32]
            yield f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_next_id = _message_ids().__next__


def _after_fork() -> None:
    global _next_id  # a forked child must not repeat its parent's ids
    _next_id = _message_ids().__next__


os.register_at_fork(after_in_child=_after_fork)


def message_id() -> str:
    """A random (version 4) UUID as text: what `str(uuid.uuid4())` gives, in a fifth of
    the time (one is made per recorded change)."""
    return _next_id()


def override_end_days(overrides: Iterable[Override]) -> list[int]:
    """The days (ordinals) on which overrides expire: the first UTC midnight at or after
    each `expires_at` (a re-grade that day, at midnight or later, finds it over)."""
    days = []
    for override in overrides:
        if override.expires_at is not None:
            moment = override.expires_at.astimezone(UTC)
            day = moment.date().toordinal()
            days.append(day if moment.time() == time(0) else day + 1)
    return days
