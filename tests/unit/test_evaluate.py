"""Evaluation: conditions, first match, stay_when hysteresis, downgrade grace, sequences."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.grader.grading.conditions import holds
from services.grader.grading.evaluate import Change, LadderState, assign, grade
from services.grader.grading.metrics import Metrics
from services.grader.grading.policy import OPS, All, AnyOf, Ladder, Leaf, Not, Policy, parse_policy
from tests.unit.factories import NOON


def leaf(metric: str, op: str, value: object) -> dict[str, Any]:
    return {"metric": metric, "op": op, "value": value}


def ladder(grace: int = 0, name: str = "tier") -> Ladder:
    doc = {"name": name, "downgrade_grace_days": grace, "tiers": [
        {"name": "gold", "when": leaf("spend_365d", ">=", 50000),
         "stay_when": leaf("spend_365d", ">=", 40000), "actions": ["gold_kit"]},
        {"name": "silver", "when": leaf("spend_365d", ">=", 10000), "actions": ["silver_kit"]},
        {"name": "basic", "actions": ["welcome"]},
    ]}
    return parse_policy({"base_currency": "CNY", "ladders": [doc]}).ladders[0]


def spend(amount: int) -> Metrics:
    return {"spend_365d": Decimal(amount), "orders_365d": 1}


def on(days: float) -> datetime:
    return NOON + timedelta(days=days)


def run(lad: Ladder, steps: Sequence[tuple[float, int]]) -> tuple[LadderState, list[Change]]:
    """Grade a customer at each (day, spend) step; every message recorded."""
    state: LadderState | None = None
    changes: list[Change] = []
    for days, amount in steps:
        state, change = assign(lad, spend(amount), state, now=on(days))
        if change is not None:
            changes.append(change)
    assert state is not None
    return state, changes


def L(metric: str, op: str = ">=", value: int = 1) -> Leaf:
    return Leaf(metric, op, Decimal(value))


# --- conditions --------------------------------------------------------------------------


def test_all_any_not() -> None:
    m: Metrics = {"orders_total": 3, "spend_total": Decimal("9.5")}
    yes, no = L("orders_total", ">=", 3), L("spend_total", ">", 10)
    assert holds(All((yes, yes)), m) and not holds(All((yes, no)), m)
    assert holds(AnyOf((no, yes)), m) and not holds(AnyOf((no, no)), m)
    assert holds(Not(no), m) and not holds(Not(yes), m)
    assert holds(All((AnyOf((no, Not(no))), Not(All((yes, no))))), m)


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [(">=", 5, True), (">", 5, False), ("<=", 5, True), ("<", 5, False),
     ("==", 5, True), ("!=", 5, False), ("!=", 4, True), (">", 4, True)],
)
def test_each_op_on_ints_and_decimals(op: str, value: int, expected: bool) -> None:
    assert holds(L("orders_total", op, value), {"orders_total": 5}) is expected
    assert holds(L("spend_total", op, value), {"spend_total": Decimal("5.00")}) is expected


@pytest.mark.parametrize("op", OPS)
def test_leaf_on_null_metric_is_false_for_every_op(op: str) -> None:
    assert holds(L("last_nps", op, 0), {"last_nps": None}) is False
    assert holds(L("last_nps", op, 0), {}) is False
    # ...and so its negation holds: "not (last_nps >= 0)" is true for someone with no answer.
    assert holds(Not(L("last_nps", op, 0)), {"last_nps": None}) is True


def test_decimal_threshold_compares_exactly() -> None:
    assert holds(L("avg_rating", ">=", 0), {"avg_rating": Decimal("4.5000")})
    cond = parse_policy({"base_currency": "CNY", "ladders": [{"name": "r", "tiers": [
        {"name": "a", "when": leaf("avg_rating", ">=", 4.5)}, {"name": "b"}]}]})
    when = cond.ladders[0].tiers[0].when
    assert when is not None
    assert holds(when, {"avg_rating": Decimal("4.5000")})
    assert not holds(when, {"avg_rating": Decimal("4.4999")})


# --- first match and initial grading ----------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "tier"), [(0, "basic"), (9999, "basic"), (10000, "silver"), (49999, "silver"),
                         (50000, "gold"), (10**9, "gold")],
)
def test_initial_grading_takes_the_first_matching_tier(amount: int, tier: str) -> None:
    state, change = assign(ladder(), spend(amount), None, now=NOON)
    assert state == LadderState(tier, NOON, tier, None, 1)
    assert change is not None
    assert (change.kind, change.from_tier, change.to_tier, change.direction, change.sequence) == (
        "tier.changed", None, tier, "initial", 1)


def test_no_change_no_message() -> None:
    first, _ = assign(ladder(), spend(20000), None, now=on(0))
    state, change = assign(ladder(), spend(30000), first, now=on(3))
    assert change is None
    assert state == first


# --- stay_when hysteresis ------------------------------------------------------------------


def test_stay_when_enter_at_50000_stay_above_40000() -> None:
    state, changes = run(ladder(), [(0, 50000), (1, 45000), (2, 40000), (3, 49999)])
    assert state.tier == "gold"
    assert [c.to_tier for c in changes] == ["gold"]
    state, changes = run(ladder(), [(0, 50000), (1, 39999), (2, 45000), (3, 50000)])
    # Below the stay line it drops; back at 45,000 it does not re-enter; 50,000 re-enters.
    assert [(c.from_tier, c.to_tier, c.direction) for c in changes] == [
        (None, "gold", "initial"), ("gold", "silver", "down"), ("silver", "gold", "up")]


def test_no_flapping_at_the_entry_boundary() -> None:
    steps = [(float(d), 50000 + (1000 if d % 2 else -1000)) for d in range(1, 30)]
    state, changes = run(ladder(), [(0, 50000), *steps])
    assert len(changes) == 1
    assert state.tier == state.computed == "gold"


def test_stay_when_does_not_grant_entry() -> None:
    state, _ = run(ladder(), [(0, 45000)])
    assert state.tier == "silver"


# --- upgrades and downgrade grace ------------------------------------------------------------


def test_upgrades_apply_at_once_even_with_grace() -> None:
    state, changes = run(ladder(grace=30), [(0, 0), (1, 10000), (1.5, 60000)])
    assert [(c.to_tier, c.direction, c.actions) for c in changes[1:]] == [
        ("silver", "up", ("silver_kit",)), ("gold", "up", ("gold_kit",))]
    assert state == LadderState("gold", on(1.5), "gold", None, 3)


def test_grace_zero_downgrades_at_once() -> None:
    state, changes = run(ladder(grace=0), [(0, 60000), (1, 0)])
    assert [(c.kind, c.to_tier, c.direction, c.actions) for c in changes[1:]] == [
        ("tier.changed", "basic", "down", ("welcome",))]
    assert state.pending_since is None


def test_downgrade_with_grace_schedules_once_then_applies() -> None:
    lad = ladder(grace=30)
    state, changes = run(lad, [(0, 60000), (1, 0)])
    scheduled = changes[-1]
    effective = datetime(2026, 12, 21, tzinfo=UTC)  # midnight UTC, 30 days after 21 Nov
    assert scheduled == Change("tier", "tier.downgrade_scheduled", "gold", "basic", "down",
                               2, (), effective)
    assert (state.tier, state.computed, state.pending_since) == ("gold", "basic", on(1).date())
    # Nothing more while the grace period runs, even as the computed tier moves about below.
    for days, amount in [(2, 0), (10, 20000), (20, 0), (30.49, 0)]:
        state, change = assign(lad, spend(amount), state, now=on(days))
        assert change is None
        assert state.tier == "gold"
    assert state.computed == "basic"
    just_before = effective - timedelta(seconds=1)
    state, change = assign(lad, spend(0), state, now=just_before)
    assert change is None
    state, change = assign(lad, spend(0), state, now=effective)
    assert change == Change("tier", "tier.changed", "gold", "basic", "down", 3, ("welcome",))
    assert state == LadderState("basic", effective, "basic", None, 3)


def test_downgrade_applies_to_the_tier_computed_when_grace_ends() -> None:
    state, changes = run(ladder(grace=30), [(0, 60000), (1, 0), (15, 20000), (31, 20000)])
    assert [(c.kind, c.to_tier) for c in changes[1:]] == [
        ("tier.downgrade_scheduled", "basic"), ("tier.changed", "silver")]
    assert state.tier == "silver"


def test_grace_counts_from_the_first_lower_day_even_without_gradings_between() -> None:
    state, changes = run(ladder(grace=30), [(0, 60000), (1, 0), (90, 0)])
    assert [c.kind for c in changes] == ["tier.changed", "tier.downgrade_scheduled",
                                         "tier.changed"]
    assert state.tier == "basic"


def test_recovery_clears_pending_and_sends_nothing() -> None:
    lad = ladder(grace=30)
    state, changes = run(lad, [(0, 60000), (1, 0), (5, 60000)])
    assert [c.kind for c in changes] == ["tier.changed", "tier.downgrade_scheduled"]
    assert state == LadderState("gold", on(0), "gold", None, 2)
    # A later drop starts a new grace period from its own day, with a new message.
    state, change = assign(lad, spend(0), state, now=on(20))
    assert change is not None
    assert change.kind == "tier.downgrade_scheduled"
    assert change.sequence == 3
    assert change.effective_at == datetime(2027, 1, 9, tzinfo=UTC)
    state, change = assign(lad, spend(0), state, now=on(40))
    assert change is None
    assert state.tier == "gold"


def test_recovery_through_stay_when_also_clears_pending() -> None:
    state, changes = run(ladder(grace=30), [(0, 60000), (1, 0), (5, 45000), (40, 45000)])
    assert [c.kind for c in changes] == ["tier.changed", "tier.downgrade_scheduled"]
    assert (state.tier, state.pending_since) == ("gold", None)


def test_upgrade_while_a_downgrade_is_pending() -> None:
    state, changes = run(ladder(grace=30), [(0, 20000), (1, 0), (2, 60000), (40, 60000)])
    assert [(c.kind, c.to_tier, c.sequence) for c in changes] == [
        ("tier.changed", "silver", 1), ("tier.downgrade_scheduled", "basic", 2),
        ("tier.changed", "gold", 3)]
    assert state == LadderState("gold", on(2), "gold", None, 3)


def test_sequence_numbers_have_no_gaps() -> None:
    steps = [(0, 0), (1, 60000), (2, 0), (3, 60000), (4, 0), (40, 0), (41, 10000),
             (42, 60000), (43, 39000), (44, 12000), (80, 0), (81, 100)]
    state, changes = run(ladder(grace=30), steps)
    assert [c.sequence for c in changes] == list(range(1, len(changes) + 1))
    assert state.sequence == len(changes)


# --- grade: every ladder -------------------------------------------------------------------


def two_ladders(grace: int = 0) -> Policy:
    return Policy("CNY", (ladder(grace, "tier"), ladder(grace, "value")))


def test_grade_grades_every_ladder_and_reports_only_changes() -> None:
    states, changes = grade(two_ladders(), spend(60000), {}, now=on(0))
    assert [(c.ladder, c.to_tier, c.sequence, c.actions) for c in changes] == [
        ("tier", "gold", 1, ("gold_kit",)), ("value", "gold", 1, ("gold_kit",))]
    states, changes = grade(two_ladders(), spend(55000), states, now=on(1))
    assert changes == []
    assert set(states) == {"tier", "value"}


def test_ladders_removed_from_the_policy_keep_their_state() -> None:
    states, _ = grade(two_ladders(), spend(60000), {}, now=on(0))
    only_tier = Policy("CNY", (ladder(0, "tier"),))
    kept, changes = grade(only_tier, spend(0), states, now=on(1))
    assert kept["value"] == states["value"]
    assert [(c.ladder, c.to_tier) for c in changes] == [("tier", "basic")]
    # When the ladder comes back, its sequence continues instead of starting again.
    _, changes = grade(two_ladders(), spend(0), kept, now=on(2))
    assert [(c.ladder, c.sequence) for c in changes] == [("value", 2)]


def test_a_tier_that_vanished_from_the_policy_moves_at_once() -> None:
    current = LadderState("platinum", on(0), "platinum", on(0).date(), 4)
    state, change = assign(ladder(grace=30), spend(60000), current, now=on(1))
    assert change is not None
    assert (change.from_tier, change.to_tier, change.sequence) == ("platinum", "gold", 5)
    assert state == LadderState("gold", on(1), "gold", None, 5)
