"""Properties of the grading core, hammered by hypothesis (deterministic: derandomized)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.grader.grading.aggregates import Aggregates, advance, apply, dedupe
from services.grader.grading.customer import CustomerState
from services.grader.grading.evaluate import Change, LadderState, assign
from services.grader.grading.metrics import compute_metrics, metrics_json
from services.grader.grading.policy import parse_policy
from services.grader.repository import decode_state, encode_state
from shared.events import Event
from tests.unit.factories import NOON, TODAY, at, feedback, interaction, purchase, refund

PROPERTY = settings(
    derandomize=True, database=None, deadline=None, max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CUSTOMERS = ("c-1", "c-2", "c-3")
# Clocks and offsets chosen to land on both sides of UTC midnight, and to tie instants.
CLOCKS = ("00:00:00", "07:59:59", "08:00:00", "12:00:00", "15:59:59", "16:00:00", "23:59:59")
OFFSETS = ("+00:00", "+08:00", "-05:00", "+05:45", "+14:00", "-12:00")
# Days around every window's edge, drawn often so that edges and same-instant ties happen.
BOUNDARY_AGES = (0, 1, 6, 7, 8, 29, 30, 89, 90, 179, 180, 364, 365, 366)
TIES = (("00:00:00", "+00:00"), ("08:00:00", "+08:00"))

money = st.builds(
    lambda units, places: str(Decimal(units).scaleb(-places)),
    st.integers(1, 10**7), st.integers(0, 4),
)


@st.composite
def events(draw: st.DrawFn, min_size: int = 0, max_size: int = 30) -> list[Event]:
    """Valid events of a few customers over about two years (a few a day ahead of TODAY)."""
    count = draw(st.integers(min_size, max_size))
    # Now and then, everything on two days at two instants: ties on occurred_at galore.
    narrow = draw(st.booleans())
    return [draw(one_event(f"e-{i}", narrow=narrow)) for i in range(count)]


@st.composite
def one_event(draw: st.DrawFn, event_id: str, *, narrow: bool = False) -> Event:
    if narrow:
        # 08:00 +08:00 and 00:00Z are the same instant.
        when = at(draw(st.sampled_from((0, 1))), *draw(st.sampled_from(TIES)))
    else:
        age = draw(st.integers(-1, 730) | st.sampled_from(BOUNDARY_AGES))
        when = at(age, draw(st.sampled_from(CLOCKS)), draw(st.sampled_from(OFFSETS)))
    who = {"customer": draw(st.sampled_from(CUSTOMERS)), "event_id": event_id}
    kind = draw(st.sampled_from(("purchase", "refund", "interaction", "feedback")))
    if kind == "purchase":
        category = draw(st.sampled_from((None, "", "shoes", "bags", "hats")))
        return purchase(draw(money), when, category=category, **who)
    if kind == "refund":
        return refund(draw(money), when, **who)
    if kind == "interaction":
        action = draw(st.sampled_from(("visit", "click", "referral", "login")))
        return interaction(when, action=action, **who)
    rating = draw(st.none() | st.integers(1, 5))
    nps = draw(st.none() | st.integers(0, 10))
    complaint = draw(st.none() | st.booleans())
    if rating is None and nps is None and complaint is None:
        complaint = False
    return feedback(when, rating=rating, nps=nps, complaint=complaint, **who)


def fold_all(batch: Iterable[Event], aggs: dict[str, Aggregates] | None = None
             ) -> dict[str, Aggregates]:
    """Fold events into per-customer aggregates."""
    aggs = {} if aggs is None else aggs
    for event in batch:
        apply(aggs.setdefault(event.customer_id, Aggregates()), event)
    return aggs


def metrics_all(aggs: dict[str, Aggregates], today: date = TODAY) -> dict[str, object]:
    """Every customer's metrics in their exact JSON form (money strings keep their digits)."""
    return {c: metrics_json(compute_metrics(a, today)) for c, a in sorted(aggs.items())}


def stored(agg: Aggregates) -> bytes:
    """The bytes of the `customers.state` column."""
    return encode_state(CustomerState("c", agg))


def round_trip(agg: Aggregates) -> Aggregates:
    """Through the database column and back."""
    return decode_state("c", stored(agg), 0, TODAY).aggregates


@PROPERTY
@given(events(), st.data())
def test_any_permutation_gives_the_same_aggregates(history: list[Event], data: st.DataObject
                                                   ) -> None:
    shuffled = data.draw(st.permutations(history))
    once, again = fold_all(history), fold_all(shuffled)
    assert once == again
    assert {c: round_trip(a) for c, a in once.items()} == {
        c: round_trip(a) for c, a in again.items()}
    assert metrics_all(once) == metrics_all(again)


@PROPERTY
@given(events(min_size=1), st.data())
def test_duplicates_change_nothing_once_deduplicated(history: list[Event], data: st.DataObject
                                                     ) -> None:
    repeats = data.draw(st.lists(st.sampled_from(history), max_size=20))
    delivered = data.draw(st.permutations(history + repeats))
    unique = dedupe(delivered)
    assert sorted(e.event_id for e in unique) == sorted(e.event_id for e in history)
    assert unique == [e for i, e in enumerate(delivered)
                      if e.event_id not in {d.event_id for d in delivered[:i]}]
    assert metrics_all(fold_all(unique)) == metrics_all(fold_all(history))


@st.composite
def chunked(draw: st.DrawFn) -> tuple[list[Event], list[list[Event]], list[date]]:
    """A history cut into chunks, each folded on a day; days non-decreasing, ending TODAY."""
    history = draw(events())
    cuts = sorted(draw(st.lists(st.integers(0, len(history)), max_size=6)))
    bounds = [0, *cuts, len(history)]
    chunks = [history[a:b] for a, b in itertools.pairwise(bounds)]
    ages = sorted(draw(st.lists(st.integers(0, 800), min_size=len(chunks) - 1,
                                max_size=len(chunks) - 1)), reverse=True)
    days = [TODAY - timedelta(days=age) for age in ages] + [TODAY]
    return history, chunks, days


@PROPERTY
@given(chunked())
def test_incremental_state_equals_recomputation(case: tuple[list[Event], list[list[Event]],
                                                            list[date]]) -> None:
    history, chunks, days = case
    aggs: dict[str, Aggregates] = {}
    for chunk, today in zip(chunks, days, strict=True):
        # What the owner does per checkpoint: load (or keep), fold, advance to the day, store.
        aggs = {c: round_trip(a) for c, a in aggs.items()}
        fold_all(chunk, aggs)
        for agg in aggs.values():
            advance(agg, today.toordinal())
    scratch = fold_all(history)
    for later in (TODAY, TODAY + timedelta(days=1), TODAY + timedelta(days=300)):
        assert metrics_all(aggs, later) == metrics_all(scratch, later)


@PROPERTY
@given(events(), st.integers(0, 800))
def test_stored_round_trip_is_exact(history: list[Event], age: int) -> None:
    for agg in fold_all(history).values():
        assert round_trip(agg) == agg
        assert round_trip(round_trip(agg)) == agg
        advance(agg, (TODAY - timedelta(days=age)).toordinal())
        assert round_trip(agg) == agg


LADDER = parse_policy({"base_currency": "CNY", "ladders": [{"name": "tier", "tiers": [
    {"name": "gold", "when": {"metric": "spend_365d", "op": ">=", "value": 50000},
     "stay_when": {"metric": "spend_365d", "op": ">=", "value": 40000}},
    {"name": "silver", "when": {"metric": "spend_365d", "op": ">=", "value": 10000}},
    {"name": "basic"},
]}]}).ladders[0]


@PROPERTY
@given(st.integers(0, 40), st.lists(st.tuples(st.integers(0, 20), st.integers(0, 70000)),
                                    min_size=1, max_size=30))
def test_messages_are_numbered_without_gaps_and_chain(grace: int,
                                                      steps: list[tuple[int, int]]) -> None:
    lad = replace(LADDER, downgrade_grace_days=grace)
    state: LadderState | None = None
    changes: list[Change] = []
    now = NOON
    for gap, amount in steps:
        now += timedelta(days=gap)
        state, change = assign(lad, {"spend_365d": Decimal(amount)}, state, now=now)
        changes += [change] if change is not None else []
        assert state.pending_since is None or (
            (lad.rank(state.tier) or 0) < (lad.rank(state.computed) or 0))
    assert state is not None
    assert [c.sequence for c in changes] == list(range(1, len(changes) + 1))
    assert state.sequence == len(changes)
    applied = [c for c in changes if c.kind == "tier.changed"]
    assert [c.from_tier for c in applied] == [None, *(c.to_tier for c in applied[:-1])]
    assert applied[-1].to_tier == state.tier
    if grace == 0:
        assert all(c.kind == "tier.changed" for c in changes)
