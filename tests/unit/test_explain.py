"""Explain and forecast: the conditions answered, the tier chosen and why, and the next
change time alone brings, all from the grading code itself.

The properties: explain agrees with the grading for random policies and histories, and
the forecast is what re-grading the customer every day would find."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.grader.grading.conditions import holds
from services.grader.grading.customer import grade_customer
from services.grader.grading.evaluate import first_match
from services.grader.grading.explain import GroupAnswer, LeafAnswer, explain
from services.grader.grading.policy import ActivePolicy, default_policy_document
from shared.events import Event
from tests.unit.factories import NOON, TODAY, at, purchase
from tests.unit.grading_cases import PROPERTY, T, graded, history, ladders, noon, policy

DEFAULT = ActivePolicy.from_document(1, default_policy_document())


def test_a_customer_short_of_vip_is_told_what_they_lack() -> None:
    events = [purchase("4000.00", at(10 + i)) for i in range(12)]
    events.append(purchase("800.00", at(5)))  # 48,800.00 over 13 orders
    e = explain(graded(events, DEFAULT), DEFAULT, now=NOON)
    tier = next(ladder for ladder in e.ladders if ladder.name == "tier")
    assert (tier.tier, tier.why) == ("important", "entry")
    vip = tier.tiers[0]
    assert vip.name == "vip" and not vip.chosen
    assert isinstance(vip.when, GroupAnswer) and vip.when.kind == "all" and not vip.when.passed
    spend, orders = vip.when.parts
    assert spend == LeafAnswer("spend_365d", ">=", Decimal(50000), Decimal("48800.00"), False,
                               Decimal("1200.00"), "more")
    assert isinstance(orders, LeafAnswer) and orders.passed and orders.gap is None
    assert [t.chosen for t in tier.tiers] == [False, True, False, False]


def test_a_vip_kept_by_stay_when_says_so() -> None:
    vip = [purchase("4500.00", at(366 - i)) for i in range(12)]  # 54,000 over 12 orders
    state = graded(vip, DEFAULT, today=T - 100)
    assert state.ladders["tier"].tier == "vip"
    # Today two have left the year: 45,000 over 10 orders, short of vip, above 40,000.
    grade_customer(state, DEFAULT, now=NOON, today=TODAY, reason="schedule")
    e = explain(state, DEFAULT, now=NOON)
    tier = e.ladders[0]
    assert (tier.tier, tier.computed, tier.why) == ("vip", "vip", "stay")


def test_a_downgrade_waiting_out_its_grace_is_explained_and_forecast() -> None:
    state = graded([purchase("50000.00", at(364)),
                    *(purchase("1.00", at(364 - i)) for i in range(11))], DEFAULT)
    assert state.ladders["tier"].tier == "vip"
    tomorrow = NOON + timedelta(days=1)  # the big purchase left the window: below stay_when
    e = explain(state, DEFAULT, now=tomorrow)
    tier = e.ladders[0]
    assert (tier.tier, tier.why, tier.pending_to) == ("vip", "grace", "regular")
    assert tier.effective_at == datetime(2026, 12, 21, tzinfo=UTC)  # 30 days of grace
    assert tier.forecast is not None
    assert (tier.forecast.on, tier.forecast.to_tier) == (date(2026, 12, 21), "regular")


def test_a_quiet_customer_is_forecast_to_churn_on_the_right_day() -> None:
    e = explain(graded([purchase("80.00", at(100))], DEFAULT), DEFAULT, now=NOON)
    lifecycle = next(ladder for ladder in e.ladders if ladder.name == "lifecycle")
    assert lifecycle.tier == "new" and lifecycle.forecast is not None
    assert lifecycle.forecast.on == TODAY + timedelta(days=80)
    assert (lifecycle.forecast.from_tier, lifecycle.forecast.to_tier) == ("new", "churned")
    nps = next(ladder for ladder in e.ladders if ladder.name == "nps")
    assert nps.forecast is None  # nothing but new feedback moves it


def test_explaining_leaves_the_customer_as_it_was() -> None:
    state = graded([purchase("80.00", at(100))], DEFAULT)
    before = copy.deepcopy(state)
    explain(state, DEFAULT, now=NOON + timedelta(days=200))
    assert state == before


# --- properties -----------------------------------------------------------------------

@PROPERTY
@given(st.lists(ladders("a"), min_size=1, max_size=1), st.lists(ladders("b"), max_size=1),
       history(), st.integers(0, 400))
def test_explain_agrees_with_the_grading(first: list[dict[str, Any]],
                                         second: list[dict[str, Any]], events: list[Event],
                                         later: int) -> None:
    active = policy(*first, *second)
    state = graded(events, active)
    now = noon(T + later)
    e = explain(state, active, now=now)
    graded_now = copy.deepcopy(state)
    grade_customer(graded_now, active, now=now, today=now.date(), reason="schedule")
    for ladder, answer in zip(active.policy.ladders, e.ladders, strict=True):
        standing = graded_now.ladders[ladder.name]
        assert (answer.tier, answer.computed) == (standing.tier, standing.computed)
        assert [t.name for t in answer.tiers if t.chosen] == [standing.tier]
        for tier, told in zip(ladder.tiers, answer.tiers, strict=True):
            if tier.when is None:
                assert told.when is None
            else:
                assert told.when is not None and told.when.passed == holds(tier.when, e.metrics)
        if answer.why == "entry":
            assert ladder.tiers[first_match(ladder, e.metrics)].name == answer.tier
        elif answer.why == "stay":
            stay = ladder.tiers[ladder.rank(answer.tier) or 0].stay_when
            assert stay is not None and holds(stay, e.metrics)
        else:
            assert standing.pending_since is not None


@PROPERTY
@given(st.lists(ladders("a"), min_size=1, max_size=1), st.lists(ladders("b"), max_size=1),
       history())
def test_the_forecast_is_what_regrading_every_day_finds(
        first: list[dict[str, Any]], second: list[dict[str, Any]], events: list[Event]) -> None:
    active = policy(*first, *second)
    state = graded(events, active)
    e = explain(state, active, now=noon(T))
    # Re-grade every day for 800 days: the first tier change of each ladder.
    daily = copy.deepcopy(state)
    seen: dict[str, tuple[date, str]] = {}
    for d in range(T + 1, T + 800):
        moment = noon(d)
        for tc in grade_customer(daily, active, now=moment, today=moment.date(),
                                 reason="schedule"):
            if tc.change.kind == "tier.changed":
                seen.setdefault(tc.change.ladder, (moment.date(), tc.change.to_tier))
    for answer in e.ladders:
        told = answer.forecast
        if answer.name in seen:
            assert told is not None and (told.on, told.to_tier) == seen[answer.name]
        else:
            assert told is None or told.on >= TODAY + timedelta(days=800)


@PROPERTY
@given(st.sampled_from((5000, 20000)), st.sampled_from((0.5, 0.8)), st.sampled_from((0, 3, 30)),
       st.lists(st.tuples(st.integers(0, 364), st.sampled_from((700, 3000, 12000))),
                min_size=1, max_size=12),
       st.integers(0, 400) | st.sampled_from((1, 30, 200, 300, 365)))
def test_entry_stay_and_grace_are_told_apart(gold: int, stay: float, grace: int,
                                             buys: list[tuple[int, int]], later: int) -> None:
    active = policy({"name": "tier", "downgrade_grace_days": grace, "tiers": [
        {"name": "gold", "when": {"metric": "spend_365d", "op": ">=", "value": gold},
         "stay_when": {"metric": "spend_365d", "op": ">=", "value": int(gold * stay)}},
        {"name": "silver", "when": {"metric": "spend_365d", "op": ">=", "value": 2000}},
        {"name": "basic"}]})
    state = graded([purchase(str(amount), at(age)) for age, amount in buys], active)
    now = noon(T + later)
    told = explain(state, active, now=now).ladders[0]
    standing = copy.deepcopy(state)
    grade_customer(standing, active, now=now, today=now.date(), reason="schedule")
    ladder = standing.ladders["tier"]
    assert (told.tier, told.computed) == (ladder.tier, ladder.computed)
    chosen = next(t for t in told.tiers if t.chosen)
    if ladder.computed != ladder.tier:
        expected = "grace"  # the rules give a lower tier: the downgrade waits
    elif chosen.when is None or chosen.when.passed:
        expected = "entry"  # the tier the rules give (no better one's `when` holds)
    else:
        expected = "stay"  # kept by `stay_when`
    assert told.why == expected
