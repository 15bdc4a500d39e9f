"""Why a customer has each tier, and when time alone will change it (pure).

Nothing here grades a second way. The customer is graded as of the moment asked
(`grade_customer` on a copy, as the owner would), each condition is answered by the one
evaluator (`conditions.holds`), the tier the rules give by `evaluate.first_match`, and
the forecast by re-grading a copy on the days `schedule.next_due` names, exactly as the
owner will if no event comes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal

from services.grader.grading.conditions import All, AnyOf, Condition, Leaf, Not, holds
from services.grader.grading.customer import CustomerState, grade_customer
from services.grader.grading.evaluate import Override, first_match, grace_ends
from services.grader.grading.metrics import Metrics, Value, compute_metrics
from services.grader.grading.policy import ActivePolicy, Ladder

# How far ahead a forecast looks, and how many re-grades it may simulate to get there.
HORIZON_DAYS = 3 * 366
MAX_REGRADES = 400

Why = Literal["entry", "stay", "grace", "override"]


@dataclass(frozen=True, slots=True)
class LeafAnswer:
    """One comparison: the metric's value, the threshold, the answer, and how far the
    value is from changing the answer when it fails (None for == and != and null)."""

    metric: str
    op: str
    threshold: Decimal
    value: Value
    passed: bool
    gap: Decimal | None
    needs: Literal["more", "less"] | None


@dataclass(frozen=True, slots=True)
class GroupAnswer:
    """`all`, `any` or `not`, with the answers of its parts."""

    kind: Literal["all", "any", "not"]
    passed: bool
    parts: tuple[Answer, ...]


Answer = LeafAnswer | GroupAnswer


@dataclass(frozen=True, slots=True)
class TierAnswer:
    """A tier of a ladder: its conditions answered for this customer."""

    name: str
    label: str
    when: Answer | None  # None: the last tier, which takes everyone else
    stay_when: Answer | None
    chosen: bool


@dataclass(frozen=True, slots=True)
class Forecast:
    """The next tier change time alone will bring, if no event comes first."""

    on: date
    from_tier: str
    to_tier: str


@dataclass(frozen=True, slots=True)
class LadderAnswer:
    """Where the customer stands on one ladder, and why."""

    name: str
    label: str
    tier: str
    computed: str
    why: Why
    pending_to: str | None
    effective_at: datetime | None
    tiers: tuple[TierAnswer, ...]
    forecast: Forecast | None
    override: Override | None = None


@dataclass(frozen=True, slots=True)
class Explanation:
    """Every ladder of the policy for one customer, as of `as_of`."""

    customer_id: str
    policy_version: int
    as_of: date
    metrics: Metrics
    ladders: tuple[LadderAnswer, ...]
    due_on: date | None


def explain(state: CustomerState, active: ActivePolicy, *, now: datetime) -> Explanation:
    """Explain `state` (left as it is) under `active`, as of `now`."""
    today = now.astimezone(UTC).date()
    current = copy.deepcopy(state)
    grade_customer(current, active, now=now, today=today, reason="schedule")
    metrics = compute_metrics(current.aggregates, today)
    ahead = forecast(current, active, today=today)
    ladders = []
    for ladder in active.policy.ladders:
        standing = current.ladders[ladder.name]
        rank = ladder.rank(standing.tier)
        matched = first_match(ladder, metrics)
        pin = current.overrides.get(ladder.name)
        if pin is not None and ladder.rank(pin.tier) is None:
            pin = None  # released: the ladder lost the tier it names
        why: Why = "override" if pin is not None else "entry" if rank == matched else (
            "stay" if standing.computed == standing.tier else "grace")
        ladders.append(LadderAnswer(
            ladder.name, ladder.label, standing.tier, standing.computed, why,
            standing.computed if standing.pending_since is not None else None,
            grace_ends(standing.pending_since, ladder.downgrade_grace_days)
            if standing.pending_since is not None else None,
            _tiers(ladder, metrics, standing.tier), ahead.get(ladder.name), pin))
    # The day the owner will re-grade without an event, as stored (after events, the next
    # day: that re-grade works out the exact one).
    due = date.fromordinal(state.due_on) if state.due_on is not None else None
    return Explanation(state.customer_id, active.version, today, metrics, tuple(ladders), due)


def forecast(state: CustomerState, active: ActivePolicy, *, today: date,
             ) -> dict[str, Forecast]:
    """Per ladder, the first tier change that re-grading on the due days brings (a copy
    of `state`, graded as of `today`), within HORIZON_DAYS."""
    sim = copy.deepcopy(state)
    found: dict[str, Forecast] = {}
    last = today.toordinal() + HORIZON_DAYS
    for _ in range(MAX_REGRADES):
        if sim.due_on is None or sim.due_on > last or len(found) == len(active.policy.ladders):
            break
        day = date.fromordinal(sim.due_on)
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        for tc in grade_customer(sim, active, now=midnight, today=day, reason="schedule"):
            change = tc.change
            if change.kind == "tier.changed" and change.ladder not in found:
                found[change.ladder] = Forecast(day, change.from_tier or "", change.to_tier)
    return found


def _tiers(ladder: Ladder, metrics: Metrics, chosen: str) -> tuple[TierAnswer, ...]:
    return tuple(
        TierAnswer(tier.name, tier.label, answer(tier.when, metrics) if tier.when else None,
                   answer(tier.stay_when, metrics) if tier.stay_when else None,
                   tier.name == chosen)
        for tier in ladder.tiers)


def answer(condition: Condition, metrics: Metrics) -> Answer:
    """A condition answered, with its parts."""
    if isinstance(condition, Leaf):
        return _leaf(condition, metrics)
    if isinstance(condition, Not):
        return GroupAnswer("not", holds(condition, metrics), (answer(condition.part, metrics),))
    kind: Literal["all", "any"] = "all" if isinstance(condition, All) else "any"
    assert isinstance(condition, All | AnyOf)  # noqa: S101 - the four kinds of Condition
    return GroupAnswer(kind, holds(condition, metrics),
                       tuple(answer(part, metrics) for part in condition.parts))


def _leaf(leaf: Leaf, metrics: Metrics) -> LeafAnswer:
    value = metrics.get(leaf.metric)
    passed = holds(leaf, metrics)
    gap: Decimal | None = None
    needs: Literal["more", "less"] | None = None
    if not passed and value is not None:
        if leaf.op in (">=", ">"):
            gap, needs = leaf.value - value, "more"
        elif leaf.op in ("<=", "<"):
            gap, needs = value - leaf.value, "less"
    return LeafAnswer(leaf.metric, leaf.op, leaf.value, value, passed, gap, needs)
