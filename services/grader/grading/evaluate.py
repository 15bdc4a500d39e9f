"""Grading: which tier each ladder gives a customer, with hysteresis and downgrade grace."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import msgspec
from msgspec.structs import replace

from services.grader.grading.metrics import Metrics
from services.grader.grading.policy import Ladder, Policy

Kind = Literal["tier.changed", "tier.downgrade_scheduled"]
Direction = Literal["up", "down", "initial"]


class LadderState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Where a customer stands on one ladder."""

    tier: str
    since: datetime
    computed: str
    pending_since: date | None
    sequence: int


class Override(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """An admin's pin of one ladder to a tier: applied instead of what the rules give,
    until it is removed (`ended`, moved back at the next grading) or `expires_at` passes."""

    tier: str
    reason: str
    set_at: datetime
    expires_at: datetime | None = None
    ended: bool = False

    def over(self, now: datetime) -> bool:
        """Removed, or past its expiry at `now`: the next grading lets the rules decide."""
        return self.ended or (self.expires_at is not None and self.expires_at <= now)


class Change(msgspec.Struct, frozen=True, gc=False):
    """A message to record: a tier change, or a downgrade that grace has postponed."""

    ladder: str
    kind: Kind
    from_tier: str | None
    to_tier: str
    direction: Direction
    sequence: int
    actions: tuple[str, ...]
    effective_at: datetime | None = None


def first_match(ladder: Ladder, metrics: Metrics) -> int:
    """Index of the best tier whose `when` holds (the last tier always does)."""
    for index, tier in enumerate(ladder.tiers):
        if tier.when_test is None or tier.when_test(metrics):
            return index
    return len(ladder.tiers) - 1


def target_rank(ladder: Ladder, metrics: Metrics, current: int | None) -> int:
    """The rank the rules give, `stay_when` keeping the current tier where it holds."""
    rank = first_match(ladder, metrics)
    if current is not None and rank > current:
        tier = ladder.tiers[current]
        if tier.stay_test is not None and tier.stay_test(metrics):
            return current
    return rank


def grace_ends(pending_since: date, grace_days: int) -> datetime:
    """Midnight UTC of the day a postponed downgrade takes effect."""
    day = pending_since + timedelta(days=grace_days)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def assign(
    ladder: Ladder, metrics: Metrics, current: LadderState | None, *, now: datetime
) -> tuple[LadderState, Change | None]:
    """The new state of one ladder and the message it records, if any."""
    cur_rank = ladder.rank(current.tier) if current else None
    rank = target_rank(ladder, metrics, cur_rank)
    computed = ladder.tiers[rank]
    if current is None:
        state = LadderState(computed.name, now, computed.name, None, 1)
        return state, _change(ladder, state, None, "initial")
    if cur_rank is None or rank < cur_rank:
        # Upgrades (and tiers that vanished from the policy) apply at once.
        direction: Direction = "up" if cur_rank is not None else "down"
        return _move(ladder, current, computed.name, now, direction)
    if rank == cur_rank:
        if current.computed == computed.name and current.pending_since is None:
            return current, None  # the common case: nothing moved
        return replace(current, computed=computed.name, pending_since=None), None
    return _downgrade(ladder, replace(current, computed=computed.name), now)


def pin(
    ladder: Ladder, metrics: Metrics, current: LadderState | None, tier: str, *,
    now: datetime,
) -> tuple[LadderState, Change | None]:
    """An override: `tier` applies at once, whatever the rules give (still kept as
    `computed`: what the entry conditions give, as for a customer new to the ladder)."""
    computed = ladder.tiers[first_match(ladder, metrics)].name
    if current is None:
        state = LadderState(tier, now, computed, None, 1)
        return state, _change(ladder, state, None, "initial")
    if current.tier == tier:
        return replace(current, computed=computed, pending_since=None), None
    state = LadderState(tier, now, computed, None, current.sequence + 1)
    return state, _change(ladder, state, current.tier, _direction(ladder, current.tier, tier))


def release(
    ladder: Ladder, metrics: Metrics, current: LadderState | None, *, now: datetime
) -> tuple[LadderState, Change | None]:
    """An override ends: the tier the entry conditions give applies at once (no stay, no
    grace: those keep a tier the customer earned, and this one was given)."""
    return pin(ladder, metrics, current, ladder.tiers[first_match(ladder, metrics)].name,
               now=now)


def _direction(ladder: Ladder, from_tier: str, to_tier: str) -> Direction:
    before = ladder.rank(from_tier)
    after = ladder.rank(to_tier)
    return "up" if before is not None and after is not None and after < before else "down"


def _downgrade(
    ladder: Ladder, current: LadderState, now: datetime
) -> tuple[LadderState, Change | None]:
    grace = ladder.downgrade_grace_days
    today = now.astimezone(UTC).date()
    pending = current.pending_since or today
    if grace == 0 or today >= pending + timedelta(days=grace):
        return _move(ladder, current, current.computed, now, "down")
    if current.pending_since is not None:
        return current, None
    state = replace(current, pending_since=today, sequence=current.sequence + 1)
    return state, Change(
        ladder.name, "tier.downgrade_scheduled", current.tier, current.computed, "down",
        state.sequence, (), grace_ends(today, grace),
    )


def _move(
    ladder: Ladder, current: LadderState, to: str, now: datetime, direction: Direction
) -> tuple[LadderState, Change]:
    state = LadderState(to, now, to, None, current.sequence + 1)
    return state, _change(ladder, state, current.tier, direction)


def _change(
    ladder: Ladder, state: LadderState, from_tier: str | None, direction: Direction
) -> Change:
    rank = ladder.rank(state.tier)
    actions = ladder.tiers[rank].actions if rank is not None else ()
    return Change(ladder.name, "tier.changed", from_tier, state.tier, direction,
                  state.sequence, actions)


def grade(
    policy: Policy, metrics: Metrics, current: dict[str, LadderState], *, now: datetime,
    overrides: Mapping[str, Override] | None = None,
) -> tuple[dict[str, LadderState], list[Change]]:
    """Grade one customer on every ladder of the policy; a ladder with an override is
    pinned to its tier (or released, when the override is over or names a tier the
    ladder no longer has)."""
    # States of ladders the policy no longer has are kept, so that a ladder that comes
    # back continues its sequence numbers instead of starting again at 1.
    states: dict[str, LadderState] = dict(current)
    changes: list[Change] = []
    for ladder in policy.ladders:
        held = current.get(ladder.name)
        override = overrides.get(ladder.name) if overrides else None
        if override is None:
            state, change = assign(ladder, metrics, held, now=now)
        elif override.over(now) or ladder.rank(override.tier) is None:
            state, change = release(ladder, metrics, held, now=now)
        else:
            state, change = pin(ladder, metrics, held, override.tier, now=now)
        states[ladder.name] = state
        if change is not None:
            changes.append(change)
    return states, changes

