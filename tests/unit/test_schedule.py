"""When time alone next moves a customer: the day a leaf flips or a grace period ends.

The property at the end is the one that matters: re-grading a customer on any day before
the one `next_due` names changes nothing at all (the schedule is never late), for random
policies and histories."""

from __future__ import annotations

import copy
from datetime import datetime
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.grader.grading.aggregates import advance
from services.grader.grading.conditions import Leaf, holds
from services.grader.grading.customer import grade_customer
from services.grader.grading.metrics import compute_metrics
from services.grader.grading.policy import ActivePolicy, default_policy_document
from services.grader.grading.schedule import DAYS_SINCE, MAX_STEPS, Timing, first_flip
from shared.events import Event
from tests.unit.factories import TODAY, at, day, fold, interaction, purchase, refund
from tests.unit.grading_cases import (
    METRIC_SCALES,
    OPS,
    ORDERED,
    PROPERTY,
    T,
    graded,
    history,
    ladders,
    noon,
    outcome,
    policy,
    spend_ladder,
)


def test_a_quiet_customer_is_due_the_day_they_churn() -> None:
    state = graded([purchase("80.00", at(178))], ActivePolicy.from_document(
        1, default_policy_document()))
    # lifecycle: new while days_since_last_activity < 180.
    assert state.due_on == day(178).toordinal() + 180


def test_a_vip_whose_spend_ages_out_is_due_on_that_day() -> None:
    events = [purchase("6000.00", at(300)), purchase("5000.00", at(100))]
    state = graded(events, policy(spend_ladder()))
    assert state.ladders["tier"].tier == "gold"
    # 300 days ago leaves the 365-day window 65 days from now: 5,000 left, below 10,000.
    assert state.due_on == day(300).toordinal() + 365 == T + 65


def test_a_day_that_changes_no_answer_is_skipped() -> None:
    events = [purchase("20000.00", at(300)), purchase("20000.00", at(100))]
    state = graded(events, policy(spend_ladder()))
    # At T+65 spend_365d falls to 20,000: still gold. At T+265 it falls to 0.
    assert state.due_on == T + 265


def test_an_old_refund_leaving_the_window_raises_spend() -> None:
    events = [purchase("10000.00", at(100)), refund("9000.00", at(300))]
    state = graded(events, policy(spend_ladder()))
    assert state.ladders["tier"].tier == "basic"
    assert state.due_on == T + 65  # the refund leaves: 10,000 again


def test_an_event_ahead_of_the_clock_enters_the_window_on_its_day() -> None:
    state = graded([purchase("10000.00", at(-1, "00:01:00"))], policy(spend_ladder()))
    assert state.ladders["tier"].tier == "basic"
    assert state.due_on == T + 1


def test_nothing_but_an_event_moves_a_policy_of_totals() -> None:
    totals = {"name": "loyal", "tiers": [
        {"name": "yes", "when": {"metric": "orders_total", "op": ">=", "value": 3}},
        {"name": "no"}]}
    state = graded([purchase("1.00", at(3)), interaction(at(2))], policy(totals))
    assert state.due_on is None
    assert Timing.of([]).windowed == {} and Timing.of([]).counted == {}


def test_a_grace_period_is_due_when_it_ends() -> None:
    active = policy(spend_ladder(grace=30))
    state = graded([purchase("10000.00", at(364))], active, today=T)
    assert state.ladders["tier"].tier == "gold" and state.due_on == T + 1
    grade_customer(state, active, now=noon(T + 1), today=day(-1), reason="schedule")
    assert state.ladders["tier"].pending_since == day(-1)
    assert state.due_on == T + 31  # spend can't change again: only the grace ends


def test_a_long_history_is_searched_to_the_exact_day_while_the_windows_only_shrink() -> None:
    events = [purchase("1000.00", at(age)) for age in range(1, 300)]
    state = graded(events, policy(spend_ladder()))
    # spend_365d stays at 10,000 or more until only 9 of the purchases are left in the
    # window: the day the 10th most recent (10 days ago) leaves it.
    assert state.due_on == T + 355


def test_a_long_history_with_refunds_is_searched_to_the_exact_day() -> None:
    events = [purchase("1000.00", at(age)) for age in range(1, 300)]
    # A refund on a day of its own: when it leaves (in 45 days), the window grows. The
    # walk goes on through the purchases leaving from 66 days on, to the day the 10th
    # most recent leaves it.
    events.append(refund("1.00", at(320)))
    state = graded(events, policy(spend_ladder()))
    assert state.due_on == T + 355


def test_an_average_is_searched_for_a_bounded_number_of_days() -> None:
    # A day of one 900 order, then a year of 1,000 orders: the average stays above 900
    # until the last order leaves, but each day moves it, so the search stops after
    # MAX_STEPS of them and a re-grade then looks further.
    ladder = {"name": "basket", "tiers": [
        {"name": "big", "when": {"metric": "avg_order_value_365d", "op": ">", "value": 900}},
        {"name": "small"}]}
    events = [purchase("900.00", at(1))] + [purchase("1000.00", at(age))
                                             for age in range(2, 300)]
    state = graded(events, policy(ladder))
    assert state.ladders["basket"].tier == "big"
    # The purchase 299 days ago leaves in 66 days, the next ones one a day after it.
    assert state.due_on == T + 66 + MAX_STEPS - 1


# --- the property -----------------------------------------------------------------------

@PROPERTY
@given(st.lists(ladders("a"), min_size=1, max_size=1), st.lists(ladders("b"), max_size=1),
       history(), st.integers(0, 3))
def test_no_regrade_before_the_due_day_changes_anything(
        first: list[dict[str, Any]], second: list[dict[str, Any]], events: list[Event],
        already: int) -> None:
    active = policy(*first, *second)
    state = graded(events, active, today=T)
    # Sometimes a few days of schedule re-grades first (grace periods under way).
    for _ in range(already):
        if state.due_on is None or state.due_on > T + 60:
            break
        d = state.due_on
        grade_customer(state, active, now=noon(d), today=datetime.fromordinal(d).date(),
                       reason="schedule")
    today = state.graded_on
    due = state.due_on
    horizon = min(due if due is not None else today + 800, today + 800)
    before = outcome(state)
    for d in range(today + 1, horizon):
        probe = copy.deepcopy(state)
        changes = grade_customer(probe, active, now=noon(d),
                                 today=datetime.fromordinal(d).date(), reason="schedule")
        assert changes == [] and outcome(probe) == before, (
            f"day {d - today} after grading changed {before} -> {outcome(probe)}; due said "
            f"{None if due is None else due - today}")


WINDOWED = ("spend_30d", "spend_365d", "orders_90d", "orders_365d", "orders_7d")


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from(WINDOWED), st.sampled_from(ORDERED), st.data()),
                min_size=1, max_size=4),
       st.lists(st.tuples(st.integers(0, 400), st.sampled_from((50, 700, 3000, 12000))),
                min_size=1, max_size=30))
def test_windows_that_only_shrink_are_due_the_exact_day(
        leaves: list[tuple[str, str, st.DataObject]], buys: list[tuple[int, int]]) -> None:
    tiers: list[dict[str, Any]] = [
        {"name": f"t{i}", "when": {"metric": metric, "op": op,
                                   "value": data.draw(st.sampled_from(METRIC_SCALES[metric]))}}
        for i, (metric, op, data) in enumerate(leaves)]
    active = policy({"name": "w", "tiers": [*tiers, {"name": "rest"}]})
    state = graded([purchase(str(amount), at(age)) for age, amount in buys], active)
    due = state.due_on
    before = outcome(state)
    for d in range(T + 1, min(due or T + 400, T + 400)):
        probe = copy.deepcopy(state)
        grade_customer(probe, active, now=noon(d), today=datetime.fromordinal(d).date(),
                       reason="schedule")
        assert outcome(probe) == before, f"changed on day {d - T}; due said {due and due - T}"
    if due is not None:
        # Each tier has one leaf: the day a leaf answers otherwise, some tier's answer
        # changes; the re-grade then computes it (the first match may stay the same).
        probe = copy.deepcopy(state)
        grade_customer(probe, active, now=noon(due), today=datetime.fromordinal(due).date(),
                       reason="schedule")
        metrics_then = compute_metrics(probe.aggregates, datetime.fromordinal(due).date())
        metrics_now = compute_metrics(state.aggregates, TODAY)
        assert [holds_leaf(t, metrics_then) for t in tiers] != [
            holds_leaf(t, metrics_now) for t in tiers]


def holds_leaf(tier: dict[str, Any], metrics: dict[str, Any]) -> bool:
    when = tier["when"]
    return holds(Leaf(when["metric"], when["op"], Decimal(when["value"])), metrics)


# Thresholds between the values a metric takes: a fraction of a unit (money has four
# decimal places, counts none) above and below the round ones.
NUDGES = (Decimal(0), Decimal("0.5"), Decimal("-0.5"), Decimal("0.00005"), Decimal("-0.00001"))
TIMED = sorted(m for m in METRIC_SCALES if m.endswith("d") or m in DAYS_SINCE)


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from(TIMED), st.sampled_from(OPS), st.data()),
                min_size=1, max_size=5),
       history(), st.integers(-2, 2))
def test_the_first_flip_is_the_first_day_a_leaf_answers_otherwise(
        drawn: list[tuple[str, str, st.DataObject]], events: list[Event], shift: int) -> None:
    """Against the grading code itself, day by day: the leaves' answers on every day up to
    the one `first_flip` names are today's, and on that day one differs (histories of a
    dozen events never reach the MAX_STEPS bound). A metric turning null (an average
    whose last order leaves the year) or back counts as a change, whatever the leaves say:
    the re-grade that day finds nothing to do and looks further."""
    leaves = [Leaf(metric, op, Decimal(data.draw(st.sampled_from(METRIC_SCALES[metric])))
                   + data.draw(st.sampled_from(NUDGES)))
              for metric, op, data in drawn]
    timing = Timing.of(leaves)
    agg = fold(events)
    today = T + shift
    advance(agg, today)
    flip = first_flip(agg, timing, today)

    def answers(d: int) -> list[tuple[bool, bool]]:
        metrics = compute_metrics(agg, datetime.fromordinal(d).date())
        return [(holds(leaf, metrics), metrics[leaf.metric] is None) for leaf in leaves]

    now = answers(today)
    truth = next((d for d in range(today + 1, today + 800) if answers(d) != now), None)
    assert flip == truth, f"said {flip and flip - today}, first change {truth and truth - today}"
