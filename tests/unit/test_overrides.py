"""Overrides: an admin's pin of a ladder to a tier, its release (removed, expired, or
naming a tier the ladder lost), the messages it records, the day it expires, how it is
explained and forecast, and how it is stored.

The rules under test (services/grader/grading/evaluate.py, customer.py, explain.py,
repository.py): a pinned ladder takes the pinned tier at once whatever the rules give,
keeping as `computed` what the entry conditions give (no stay_when, no grace); on release
the tier the entry conditions give applies at once (no grace); the changes of a ladder
that had an override at the start of a grading have the reason "override"; an override
that is over is dropped after the grading, and `due_on` names the first UTC midnight at
or after an expiry."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.grader.grading.customer import SALT_BYTES, CustomerState, Reason, grade_customer
from services.grader.grading.evaluate import (
    Change,
    LadderState,
    Override,
    assign,
    first_match,
    grade,
)
from services.grader.grading.explain import Forecast, explain
from services.grader.grading.metrics import Metrics
from services.grader.grading.policy import ActivePolicy
from services.grader.repository import decode_state, encode_state, stored_salt
from shared.events import Event
from tests.unit.factories import NOON, TODAY, at, fold, purchase
from tests.unit.grading_cases import (
    PROPERTY,
    T,
    graded,
    history,
    ladders,
    noon,
    policy,
    spend_ladder,
)
from tests.unit.test_aggregates import FORMAT_2_ROW

# --- helpers -------------------------------------------------------------------------------

T0 = NOON  # when the held states were set
NOW = NOON + timedelta(days=1)  # when the table's gradings run


def leaf(metric: str, op: str, value: object) -> dict[str, Any]:
    return {"metric": metric, "op": op, "value": value}


def three_tiers(name: str, grace: int = 30) -> dict[str, Any]:
    """gold (enter at 50,000, stay above 40,000), silver (10,000), basic."""
    return {"name": name, "downgrade_grace_days": grace, "tiers": [
        {"name": "gold", "when": leaf("spend_365d", ">=", 50000),
         "stay_when": leaf("spend_365d", ">=", 40000), "actions": ["gold_kit"]},
        {"name": "silver", "when": leaf("spend_365d", ">=", 10000), "actions": ["silver_kit"]},
        {"name": "basic", "actions": ["welcome"]},
    ]}


TWO = policy(three_tiers("tier"), three_tiers("value"))


def spend(amount: int) -> Metrics:
    return {"spend_365d": Decimal(amount)}


def held(tier: str, computed: str | None = None, pending: date | None = None,
         seq: int = 3) -> LadderState:
    return LadderState(tier, T0, computed or tier, pending, seq)


def pin_to(tier: str, *, expires_at: datetime | None = None, ended: bool = False) -> Override:
    return Override(tier, "support ticket 42", T0, expires_at, ended)


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def end_day(expires_at: datetime) -> date:
    """The first UTC midnight at or after `expires_at`, worked out here on its own."""
    moment = expires_at.astimezone(UTC)
    start = midnight(moment.date())
    return moment.date() if moment == start else moment.date() + timedelta(days=1)


def customer(*events: Event, overrides: dict[str, Override] | None = None) -> CustomerState:
    state = CustomerState.new("c-1")
    fold(events, state.aggregates)
    state.overrides = dict(overrides or {})
    return state


# --- 1. pin, release and grade: one ladder at a time ------------------------------------------

PIN_CASES = [
    pytest.param(
        held("silver"), 20000, pin_to("gold"),
        LadderState("gold", NOW, "silver", None, 4),
        Change("tier", "tier.changed", "silver", "gold", "up", 4, ("gold_kit",)),
        id="pin-to-a-higher-tier-moves-up"),
    pytest.param(
        held("gold"), 60000, pin_to("basic"),
        LadderState("basic", NOW, "gold", None, 4),
        Change("tier", "tier.changed", "gold", "basic", "down", 4, ("welcome",)),
        id="pin-to-a-lower-tier-moves-down-at-once-despite-grace"),
    pytest.param(
        held("gold", "basic", pending=T0.date(), seq=4), 0, pin_to("gold"),
        LadderState("gold", T0, "basic", None, 4), None,
        id="pin-to-the-current-tier-cancels-the-pending-downgrade"),
    pytest.param(
        held("gold"), 45000, pin_to("gold"),
        LadderState("gold", T0, "silver", None, 3), None,
        id="pinned-computed-is-the-entry-tier-not-stay-when"),
    pytest.param(
        None, 0, pin_to("gold"),
        LadderState("gold", NOW, "basic", None, 1),
        Change("tier", "tier.changed", None, "gold", "initial", 1, ("gold_kit",)),
        id="new-customer-pinned-is-initial"),
    pytest.param(
        held("diamond"), 0, pin_to("silver"),
        LadderState("silver", NOW, "basic", None, 4),
        Change("tier", "tier.changed", "diamond", "silver", "down", 4, ("silver_kit",)),
        id="pin-from-a-tier-the-ladder-lost"),
    pytest.param(
        held("gold", "basic"), 0, pin_to("gold", ended=True),
        LadderState("basic", NOW, "basic", None, 4),
        Change("tier", "tier.changed", "gold", "basic", "down", 4, ("welcome",)),
        id="removed-releases-down-at-once-no-grace"),
    pytest.param(
        held("gold", "silver"), 45000, pin_to("gold", ended=True),
        LadderState("silver", NOW, "silver", None, 4),
        Change("tier", "tier.changed", "gold", "silver", "down", 4, ("silver_kit",)),
        id="release-ignores-stay-when"),
    pytest.param(
        held("basic", "gold"), 60000, pin_to("basic", expires_at=NOW),
        LadderState("gold", NOW, "gold", None, 4),
        Change("tier", "tier.changed", "basic", "gold", "up", 4, ("gold_kit",)),
        id="expired-at-this-very-moment-releases-up"),
    pytest.param(
        held("basic", "gold"), 60000,
        pin_to("basic", expires_at=NOW + timedelta(microseconds=1)),
        LadderState("basic", T0, "gold", None, 3), None,
        id="expiring-a-microsecond-later-still-pinned"),
    pytest.param(
        held("silver"), 20000, pin_to("gold", ended=True),
        held("silver"), None,
        id="release-when-computed-equals-tier-says-nothing"),
    pytest.param(
        held("silver", "basic", pending=T0.date()), 20000, pin_to("gold", ended=True),
        LadderState("silver", T0, "silver", None, 3), None,
        id="release-clears-a-pending-downgrade"),
    pytest.param(
        None, 20000, pin_to("gold", ended=True),
        LadderState("silver", NOW, "silver", None, 1),
        Change("tier", "tier.changed", None, "silver", "initial", 1, ("silver_kit",)),
        id="release-of-a-new-customer-is-initial"),
    pytest.param(
        held("gold"), 20000, pin_to("platinum"),
        LadderState("silver", NOW, "silver", None, 4),
        Change("tier", "tier.changed", "gold", "silver", "down", 4, ("silver_kit",)),
        id="override-naming-a-lost-tier-is-released"),
    pytest.param(
        held("silver"), 20000, pin_to("platinum"),
        held("silver"), None,
        id="lost-tier-release-to-the-same-tier-says-nothing"),
    pytest.param(
        None, 60000, pin_to("platinum"),
        LadderState("gold", NOW, "gold", None, 1),
        Change("tier", "tier.changed", None, "gold", "initial", 1, ("gold_kit",)),
        id="lost-tier-on-a-new-customer-grades-by-the-rules"),
]


@pytest.mark.parametrize(("current", "amount", "override", "state", "change"), PIN_CASES)
def test_pin_and_release(current: LadderState | None, amount: int, override: Override,
                         state: LadderState, change: Change | None) -> None:
    states, changes = grade(TWO.policy, spend(amount), {"tier": current} if current else {},
                            now=NOW, overrides={"tier": override})
    assert states["tier"] == state
    assert [c for c in changes if c.ladder == "tier"] == ([change] if change else [])


VALUE = TWO.policy.ladders[1]


@pytest.mark.parametrize(
    ("value", "amount"),
    [pytest.param(None, 60000, id="new"),
     pytest.param(held("gold"), 0, id="downgrade-waits-out-its-grace"),
     pytest.param(held("gold", "basic", pending=T0.date() - timedelta(days=40)), 0,
                  id="grace-over-downgrade-applies"),
     pytest.param(held("silver"), 45000, id="upgrade"),
     pytest.param(held("gold"), 45000, id="kept-by-stay-when")])
def test_other_ladders_are_graded_by_the_rules(value: LadderState | None, amount: int) -> None:
    current = {"tier": held("silver")} | ({"value": value} if value else {})
    states, changes = grade(TWO.policy, spend(amount), current, now=NOW,
                            overrides={"tier": pin_to("gold")})
    expected_state, expected_change = assign(VALUE, spend(amount), value, now=NOW)
    assert states["value"] == expected_state
    assert [c for c in changes if c.ladder == "value"] == (
        [expected_change] if expected_change else [])
    assert states["tier"].tier == "gold"


def test_the_rules_alone_give_what_the_table_expects_of_the_other_ladder() -> None:
    # The oracle above is `assign`: pin its answers down so that it cannot drift unnoticed.
    state, change = assign(VALUE, spend(0), held("gold"), now=NOW)
    assert state == LadderState("gold", T0, "basic", NOW.date(), 4)
    assert change == Change("value", "tier.downgrade_scheduled", "gold", "basic", "down", 4,
                            (), datetime(2026, 12, 21, tzinfo=UTC))


@pytest.mark.parametrize("reason", ["event", "schedule", "policy"])
def test_reasons_override_on_the_pinned_ladder_and_the_base_reason_elsewhere(
        reason: Reason) -> None:
    state = customer(purchase("20000.00", at(3)), overrides={"tier": pin_to("gold")})
    changes = grade_customer(state, TWO, now=NOON, today=TODAY, reason=reason)
    assert [(tc.change.ladder, tc.change.from_tier, tc.change.to_tier, tc.change.direction,
             tc.reason) for tc in changes] == [
        ("tier", None, "gold", "initial", "override"),
        ("value", None, "silver", "initial", reason)]
    assert state.ladders["tier"] == LadderState("gold", NOON, "silver", None, 1)
    assert state.overrides == {"tier": pin_to("gold")}  # not over: kept


def test_a_removed_override_moves_back_with_reason_override_and_is_dropped() -> None:
    state = customer(purchase("20000.00", at(3)), overrides={"tier": pin_to("gold")})
    grade_customer(state, TWO, now=NOON, today=TODAY, reason="event")
    state.overrides = {"tier": pin_to("gold", ended=True)}
    later = NOON + timedelta(hours=1)
    changes = grade_customer(state, TWO, now=later, today=TODAY, reason="event")
    assert [(tc.change.ladder, tc.change.from_tier, tc.change.to_tier, tc.change.direction,
             tc.change.sequence, tc.reason) for tc in changes] == [
        ("tier", "gold", "silver", "down", 2, "override")]
    assert state.ladders["tier"] == LadderState("silver", later, "silver", None, 2)
    assert state.overrides == {}
    # Next time the rules decide, and say so.
    changes = grade_customer(state, TWO, now=later, today=TODAY, reason="event")
    assert changes == []


def test_a_lost_tier_override_is_released_and_dropped() -> None:
    state = customer(purchase("60000.00", at(3)), overrides={"tier": pin_to("platinum")})
    changes = grade_customer(state, TWO, now=NOON, today=TODAY, reason="event")
    assert [(tc.change.ladder, tc.change.to_tier, tc.reason) for tc in changes] == [
        ("tier", "gold", "override"), ("value", "gold", "event")]
    # Dropped: a later policy bringing the tier back does not pin the customer again.
    assert state.overrides == {}


def test_sequence_numbers_continue_without_gaps_through_pins_and_releases() -> None:
    later = T0 + timedelta(days=9)
    steps: list[tuple[int, int, dict[str, Override]]] = [
        (0, 0, {}),                                       # initial basic
        (1, 0, {"tier": pin_to("gold")}),                  # pinned up
        (2, 60000, {"tier": pin_to("gold")}),              # nothing
        (3, 0, {"tier": pin_to("silver")}),                # pinned down
        (4, 0, {"tier": pin_to("silver", ended=True)}),    # released down
        (5, 60000, {}),                                   # rules: up
        (6, 0, {}),                                       # rules: downgrade scheduled
        (7, 0, {"tier": pin_to("gold", expires_at=later)}),  # pending cancelled, no message
        (8, 0, {"tier": pin_to("gold", expires_at=later)}),  # nothing
        (9, 0, {"tier": pin_to("gold", expires_at=later)}),  # expired: released down
        (10, 0, {}),                                      # nothing
        (11, 60000, {"tier": pin_to("diamond")}),          # lost tier: released up
    ]
    states: dict[str, LadderState] = {}
    changes: list[Change] = []
    for days, amount, overrides in steps:
        states, found = grade(TWO.policy, spend(amount), states, now=T0 + timedelta(days=days),
                              overrides=overrides)
        changes += found
    tier = [(c.kind, c.from_tier, c.to_tier, c.direction, c.sequence)
            for c in changes if c.ladder == "tier"]
    assert tier == [
        ("tier.changed", None, "basic", "initial", 1),
        ("tier.changed", "basic", "gold", "up", 2),
        ("tier.changed", "gold", "silver", "down", 3),
        ("tier.changed", "silver", "basic", "down", 4),
        ("tier.changed", "basic", "gold", "up", 5),
        ("tier.downgrade_scheduled", "gold", "basic", "down", 6),
        ("tier.changed", "gold", "basic", "down", 7),
        ("tier.changed", "basic", "gold", "up", 8),
    ]
    assert states["tier"] == LadderState("gold", T0 + timedelta(days=11), "gold", None, 8)
    value = [c.sequence for c in changes if c.ladder == "value"]
    assert value == list(range(1, len(value) + 1)) and states["value"].sequence == len(value)


# --- 2. expiry: dropped, due, moved ---------------------------------------------------------

SPEND = policy(spend_ladder(grace=30))  # gold: spend_365d >= 10,000; else basic
EXPIRES = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.mark.parametrize(
    ("graded_at", "kept"),
    [pytest.param(EXPIRES - timedelta(microseconds=1), True, id="a-microsecond-before"),
     pytest.param(EXPIRES, False, id="at-expiry"),
     pytest.param(EXPIRES + timedelta(days=3, hours=5), False, id="days-after")])
def test_an_expired_override_is_dropped_at_a_grading_at_or_after_it(
        graded_at: datetime, kept: bool) -> None:
    pin = pin_to("gold", expires_at=EXPIRES)
    state = customer(purchase("5000.00", at(3)), overrides={"tier": pin})
    grade_customer(state, SPEND, now=NOON, today=TODAY, reason="event")
    assert state.ladders["tier"].tier == "gold"
    changes = grade_customer(state, SPEND, now=graded_at, today=graded_at.date(),
                             reason="schedule")
    assert state.overrides == ({"tier": pin} if kept else {})
    assert state.ladders["tier"].tier == ("gold" if kept else "basic")
    assert [(tc.change.to_tier, tc.reason) for tc in changes] == (
        [] if kept else [("basic", "override")])


PLUS8 = timezone(timedelta(hours=8))
MINUS5 = timezone(timedelta(hours=-5))


@pytest.mark.parametrize(
    ("expires_at", "due"),
    [pytest.param(datetime(2026, 11, 25, tzinfo=UTC), date(2026, 11, 25), id="midnight"),
     pytest.param(datetime(2026, 11, 24, 22, tzinfo=UTC), date(2026, 11, 25), id="mid-day"),
     pytest.param(datetime(2026, 11, 25, 8, tzinfo=PLUS8), date(2026, 11, 25),
                  id="midnight-utc-written-at-plus-8"),
     pytest.param(datetime(2026, 11, 25, 6, tzinfo=PLUS8), date(2026, 11, 25),
                  id="mid-day-utc-the-day-before-at-plus-8"),
     pytest.param(datetime(2026, 11, 24, 20, tzinfo=MINUS5), date(2026, 11, 26),
                  id="after-midnight-utc-at-minus-5"),
     pytest.param(datetime(2026, 11, 25, 0, 0, 0, 1, tzinfo=UTC), date(2026, 11, 26),
                  id="a-microsecond-past-midnight"),
     pytest.param(NOON + timedelta(minutes=1), date(2026, 11, 21), id="later-today")])
def test_due_on_is_the_first_utc_midnight_at_or_after_the_expiry(
        expires_at: datetime, due: date) -> None:
    assert end_day(expires_at) == due  # the test's own arithmetic agrees with the table
    state = customer(purchase("5000.00", at(3)),
                     overrides={"tier": pin_to("gold", expires_at=expires_at)})
    grade_customer(state, SPEND, now=NOON, today=TODAY, reason="event")
    assert state.due_on == due.toordinal()
    # The owner's re-grade that day, at midnight, finds it over and moves the ladder.
    changes = grade_customer(state, SPEND, now=midnight(due), today=due, reason="schedule")
    assert [(tc.change.ladder, tc.change.from_tier, tc.change.to_tier, tc.change.direction,
             tc.change.sequence, tc.reason) for tc in changes] == [
        ("tier", "gold", "basic", "down", 2, "override")]
    assert state.ladders["tier"] == LadderState("basic", midnight(due), "basic", None, 2)
    assert state.overrides == {}


def test_without_the_override_nothing_was_due() -> None:
    # The baseline the table above relies on: 5,000 never flips `spend_365d >= 10,000`.
    state = customer(purchase("5000.00", at(3)))
    grade_customer(state, SPEND, now=NOON, today=TODAY, reason="event")
    assert state.due_on is None


@pytest.mark.parametrize(
    ("days", "due"),
    [pytest.param(5, T + 5, id="earlier-than-the-window-flip"),
     pytest.param(65, T + 65, id="same-day-as-the-window-flip"),
     pytest.param(100, T + 65, id="later-than-the-window-flip")])
def test_the_expiry_is_due_when_it_comes_before_another_due_day(days: int, due: int) -> None:
    big = purchase("12000.00", at(300))  # leaves the 365-day window at T+65
    base = customer(big)
    grade_customer(base, SPEND, now=NOON, today=TODAY, reason="event")
    assert base.due_on == T + 65
    expires = midnight(date.fromordinal(T + days)) - timedelta(hours=3)  # mid-day, day before
    state = customer(big, overrides={"tier": pin_to("basic", expires_at=expires)})
    grade_customer(state, SPEND, now=NOON, today=TODAY, reason="event")
    assert state.ladders["tier"] == LadderState("basic", NOON, "gold", None, 1)
    assert state.due_on == due


def test_an_expiry_is_due_under_a_policy_only_events_move() -> None:
    totals = policy({"name": "loyal", "downgrade_grace_days": 30, "tiers": [
        {"name": "yes", "when": leaf("orders_total", ">=", 3)}, {"name": "no"}]})
    expires = datetime(2026, 12, 1, 9, tzinfo=UTC)
    state = customer(purchase("1.00", at(3)),
                     overrides={"loyal": pin_to("yes", expires_at=expires)})
    grade_customer(state, totals, now=NOON, today=TODAY, reason="event")
    assert state.due_on == date(2026, 12, 2).toordinal()
    checkpoint = copy.deepcopy(state)
    grade_customer(checkpoint, totals, now=NOON, today=TODAY, reason="event",
                   schedule="next_day")
    assert checkpoint.due_on == T + 1  # something can change with time: tomorrow
    unpinned = customer(purchase("1.00", at(3)))
    grade_customer(unpinned, totals, now=NOON, today=TODAY, reason="event")
    assert unpinned.due_on is None
    changes = grade_customer(state, totals, now=midnight(date(2026, 12, 2)),
                             today=date(2026, 12, 2), reason="schedule")
    assert [(tc.change.to_tier, tc.reason) for tc in changes] == [("no", "override")]
    assert state.due_on is None and state.overrides == {}


# --- explain -------------------------------------------------------------------------------


def test_a_pinned_ladder_is_explained_and_its_expiry_forecast() -> None:
    expires = datetime(2026, 12, 1, 9, tzinfo=UTC)
    pin = pin_to("gold", expires_at=expires)
    state = customer(purchase("5000.00", at(3)), overrides={"tier": pin})
    grade_customer(state, SPEND, now=NOON, today=TODAY, reason="event")
    told = explain(state, SPEND, now=NOON).ladders[0]
    assert (told.tier, told.computed, told.why, told.override) == (
        "gold", "basic", "override", pin)
    assert [t.name for t in told.tiers if t.chosen] == ["gold"]
    assert told.forecast == Forecast(date(2026, 12, 2), "gold", "basic")


def test_an_override_over_at_the_moment_explained_is_not_the_reason() -> None:
    pin = pin_to("gold", expires_at=EXPIRES)
    state = customer(purchase("5000.00", at(3)), overrides={"tier": pin})
    grade_customer(state, SPEND, now=NOON, today=TODAY, reason="event")
    told = explain(state, SPEND, now=EXPIRES).ladders[0]
    assert (told.tier, told.why, told.override, told.forecast) == ("basic", "entry", None, None)
    assert state.overrides == {"tier": pin}  # explaining changes nothing


# An override naming a tier the ladder no longer has is released (the rules decide) and
# dropped from the state, so it is not the reason either.
def test_an_override_naming_a_lost_tier_is_not_the_reason() -> None:
    state = customer(purchase("20000.00", at(3)), overrides={"tier": pin_to("platinum")})
    grade_customer(state, SPEND, now=NOON, today=TODAY, reason="event")
    told = explain(state, SPEND, now=NOON).ladders[0]
    assert told.tier == "gold"  # released: the rules decide
    assert (told.why, told.override) == ("entry", None)
    assert state.overrides == {}  # dropped: a tier coming back later does not re-pin


# --- 3. properties ---------------------------------------------------------------------------

def expiries(now: datetime, *, past: bool) -> st.SearchStrategy[datetime]:
    """A moment within 400 days (some before `now`, or `now` itself, when `past`), or a
    UTC midnight."""
    low = -3 * 1440 if past else 1
    first = -2 if past else 1
    base = midnight(now.date())
    moments = (st.integers(low, 400 * 1440).map(lambda m: now + timedelta(minutes=m))
               | st.integers(first, 400).map(lambda d: base + timedelta(days=d)))
    return (moments | st.just(now)) if past else moments


@st.composite
def pins(draw: st.DrawFn, active: ActivePolicy, now: datetime, *, lost: bool, past: bool,
         expiring: bool = False) -> dict[str, Override]:
    """Random overrides of some of the policy's ladders."""
    found: dict[str, Override] = {}
    for index, ladder in enumerate(active.policy.ladders):
        # The first ladder always, the second mostly: pins are what is under test.
        if index and not draw(st.sampled_from((True, True, False))):
            continue
        names = [t.name for t in ladder.tiers] + (["gone"] if lost else [])
        moments = expiries(now, past=past)
        expires = draw(moments if expiring else st.none() | moments)
        ended = draw(st.sampled_from((False, False, False, True))) if past else False
        set_at = now - timedelta(days=draw(st.integers(0, 30)))
        found[ladder.name] = Override(draw(st.sampled_from(names)), "why not", set_at,
                                      expires, ended)
    return found


def live(pin: Override | None, ladder: Any, now: datetime) -> bool:
    return pin is not None and not pin.over(now) and ladder.rank(pin.tier) is not None


@PROPERTY
@given(st.lists(ladders("a"), min_size=1, max_size=1), st.lists(ladders("b"), max_size=1),
       history(), st.integers(0, 60), st.data())
def test_explain_says_override_exactly_on_pinned_ladders(
        first: list[dict[str, Any]], second: list[dict[str, Any]], events: list[Event],
        later: int, data: st.DataObject) -> None:
    active = policy(*first, *second)
    state = graded(events, active)
    # Tiers the ladders have (a lost tier: the test above), live or over.
    state.overrides = data.draw(pins(active, noon(T), lost=False, past=True))
    if data.draw(st.booleans()):
        grade_customer(state, active, now=noon(T), today=TODAY, reason="event")
    now = noon(T + later) + timedelta(minutes=data.draw(st.integers(0, 1439)))
    e = explain(state, active, now=now)
    standing = copy.deepcopy(state)
    grade_customer(standing, active, now=now, today=now.date(), reason="schedule")
    for ladder, told in zip(active.policy.ladders, e.ladders, strict=True):
        pin = state.overrides.get(ladder.name)
        pinned = live(pin, ladder, now)
        assert (told.why == "override") is pinned
        assert told.tier == standing.ladders[ladder.name].tier
        if pinned:
            assert pin is not None
            assert (told.tier, told.override) == (pin.tier, pin)
            # While pinned, `computed` is what the entry conditions give (no stay_when).
            assert told.computed == ladder.tiers[first_match(ladder, e.metrics)].name
            assert [t.name for t in told.tiers if t.chosen] == [pin.tier]
        else:
            assert told.override is None


@PROPERTY
@given(st.lists(ladders("a"), min_size=1, max_size=1), st.lists(ladders("b"), max_size=1),
       history(), st.data())
def test_the_forecast_of_an_expiring_pin_is_the_regrade_on_its_end_day(
        first: list[dict[str, Any]], second: list[dict[str, Any]], events: list[Event],
        data: st.DataObject) -> None:
    active = policy(*first, *second)
    state = graded(events, active)
    state.overrides = data.draw(pins(active, noon(T), lost=False, past=False, expiring=True))
    grade_customer(state, active, now=noon(T), today=TODAY, reason="event")
    e = explain(state, active, now=noon(T))
    for ladder, told in zip(active.policy.ladders, e.ladders, strict=True):
        pin = state.overrides.get(ladder.name)
        if pin is None:
            continue
        assert pin.expires_at is not None
        end = end_day(pin.expires_at)
        assert state.due_on is not None and state.due_on <= end.toordinal()
        probe = copy.deepcopy(state)
        moved = [tc for tc in grade_customer(probe, active, now=midnight(end), today=end,
                                             reason="schedule")
                 if tc.change.ladder == ladder.name]
        assert ladder.name not in probe.overrides
        if moved:
            (tc,) = moved
            assert (tc.change.kind, tc.reason) == ("tier.changed", "override")
            assert told.forecast == Forecast(end, pin.tier, tc.change.to_tier)
        else:
            assert told.forecast is None or told.forecast.on > end


UTC_OR_NOT = st.sampled_from((UTC, PLUS8, MINUS5))
MOMENTS = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),  # noqa: DTZ001
                       timezones=UTC_OR_NOT)
OVERRIDES = st.builds(Override, st.text(max_size=12), st.text(max_size=40), MOMENTS,
                      st.none() | MOMENTS, st.booleans())


@PROPERTY
@given(history(), st.dictionaries(st.text(min_size=1, max_size=8), OVERRIDES, max_size=4),
       st.none() | st.binary(min_size=SALT_BYTES, max_size=SALT_BYTES) | st.binary())
def test_stored_round_trip_keeps_overrides_and_salt(
        events: list[Event], overrides: dict[str, Override], salt: bytes | None) -> None:
    state = graded(events, policy(spend_ladder(grace=30)))
    state.overrides, state.salt = overrides, salt
    blob = encode_state(state)
    due = date.fromordinal(state.due_on) if state.due_on is not None else None
    back = decode_state("c-1", blob, state.policy_version, date.fromordinal(state.graded_on),
                        due)
    assert back == state
    assert back.overrides == overrides and list(back.overrides) == list(overrides)
    assert back.salt == salt and stored_salt(blob) == salt
    for o in back.overrides.values():  # stored as instants: read back in UTC
        assert o.set_at.utcoffset() == timedelta(0)
        assert o.expires_at is None or o.expires_at.utcoffset() == timedelta(0)
    assert encode_state(back) == blob


@PROPERTY
@given(st.lists(ladders("a"), min_size=1, max_size=1), st.lists(ladders("b"), max_size=1),
       history(), st.integers(0, 400), st.data())
def test_grading_twice_at_the_same_moment_changes_nothing_the_second_time(
        first: list[dict[str, Any]], second: list[dict[str, Any]], events: list[Event],
        later: int, data: st.DataObject) -> None:
    active = policy(*first, *second)
    state = graded(events, active)
    now = noon(T + later)
    state.overrides = data.draw(pins(active, now, lost=True, past=True))
    expected = {ladder.name for ladder in active.policy.ladders
                if live(state.overrides.get(ladder.name), ladder, now)}
    grade_customer(state, active, now=now, today=now.date(), reason="event")
    for name in expected:
        assert state.ladders[name].tier == state.overrides[name].tier
    assert all(not o.over(now) for o in state.overrides.values())
    once = copy.deepcopy(state)
    assert grade_customer(state, active, now=now, today=now.date(), reason="event") == []
    assert state == once


# --- 4. the stored format ----------------------------------------------------------------------


def test_a_row_stored_before_overrides_decodes_with_none_and_no_salt() -> None:
    # Format 2 as it was before overrides and salts: its first 20 elements.
    doc = msgspec.msgpack.decode(FORMAT_2_ROW)
    assert len(doc) == 22
    old = msgspec.msgpack.encode(doc[:20])
    back = decode_state("c-1", old, 1, TODAY)
    full = decode_state("c-1", FORMAT_2_ROW, 1, TODAY)
    assert full.overrides and full.salt is not None
    assert back.overrides == {} and back.salt is None
    assert stored_salt(old) is None
    assert (back.aggregates, back.ladders) == (full.aggregates, full.ladders)


def test_a_new_customer_has_a_random_salt_and_no_overrides() -> None:
    one, two = CustomerState.new("c-1"), CustomerState.new("c-2")
    assert one.overrides == {} and one.ladders == {}
    assert one.salt is not None and len(one.salt) == SALT_BYTES
    assert one.salt != two.salt
    assert stored_salt(encode_state(one)) == one.salt
