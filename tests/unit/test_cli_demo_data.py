"""The demo history: deterministic, valid by the contract, and shaped like its personas."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.cli import build_parser
from services.cli.demo_data import (
    PERSONA_WEIGHTS,
    PERSONAS,
    customer_id,
    generate,
    persona_counts,
    persona_of,
)
from services.grader.dashboard import threshold
from services.grader.grading.aggregates import apply
from services.grader.grading.customer import CustomerState, grade_customer
from services.grader.grading.metrics import Metrics, compute_metrics
from services.grader.grading.policy import ActivePolicy, default_policy_document
from shared.events import parse_event_obj

NOW = datetime(2026, 3, 14, 6, 30, tzinfo=UTC)
AMOUNT = re.compile(r"^\d+\.\d{2}$")


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return generate(300, seed=7, now=NOW)


@pytest.fixture(scope="module")
def by_persona(events: list[dict[str, Any]]) -> dict[str, list[list[dict[str, Any]]]]:
    """Each persona's customers, each as their list of events."""
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_customer[event["customer_id"]].append(event)
    out: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for index in range(300):
        out[persona_of(index)].append(by_customer[customer_id(index)])
    return out


def days_ago(event: dict[str, Any]) -> float:
    return (NOW - datetime.fromisoformat(event["occurred_at"])) / timedelta(days=1)


def of_type(history: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in history if e["type"] == kind]


def test_same_seed_same_events() -> None:
    assert generate(50, seed=3, now=NOW) == generate(50, seed=3, now=NOW)


def test_event_ids_do_not_depend_on_the_clock() -> None:
    later = NOW + timedelta(days=3)
    ids = [e["event_id"] for e in generate(50, seed=3, now=NOW)]
    assert sorted(ids) == sorted(e["event_id"] for e in generate(50, seed=3, now=later))


def test_another_seed_other_ids() -> None:
    first = {e["event_id"] for e in generate(20, seed=1, now=NOW)}
    assert first.isdisjoint(e["event_id"] for e in generate(20, seed=2, now=NOW))


def test_a_customer_history_does_not_depend_on_how_many_customers(
    events: list[dict[str, Any]],
) -> None:
    small = [e for e in generate(10, seed=7, now=NOW) if e["customer_id"] == customer_id(4)]
    assert small == [e for e in events if e["customer_id"] == customer_id(4)]


def test_every_event_is_valid_and_ids_are_unique(events: list[dict[str, Any]]) -> None:
    for event in events:
        parse_event_obj(event)
    assert len({e["event_id"] for e in events}) == len(events)


def test_history_is_ordered_past_and_two_years_long(events: list[dict[str, Any]]) -> None:
    instants = [datetime.fromisoformat(e["occurred_at"]) for e in events]
    assert instants == sorted(instants)
    assert max(instants) <= NOW
    assert 700 < days_ago(events[0]) <= 731


def test_money_is_two_decimal_cny(events: list[dict[str, Any]]) -> None:
    for event in events:
        if event["type"] in ("purchase", "refund"):
            assert AMOUNT.match(event["data"]["amount"])
            assert event["data"]["currency"] == "CNY"


def test_every_persona_is_present_in_its_proportion() -> None:
    assert persona_counts(100) == dict(PERSONA_WEIGHTS)
    assert set(persona_counts(300)) == set(PERSONAS)


def test_kinds_channels_and_actions_vary(events: list[dict[str, Any]]) -> None:
    assert {e["type"] for e in events} == {"purchase", "refund", "interaction", "feedback"}
    interactions = of_type(events, "interaction")
    assert len({e["data"]["channel"] for e in interactions}) >= 6
    assert "referral" in {e["data"]["action"] for e in interactions}
    assert len({e["data"]["category"] for e in of_type(events, "purchase")}) >= 8


def spend_365d(history: list[dict[str, Any]]) -> Decimal:
    recent = [e for e in history if days_ago(e) < 365]
    bought = sum(Decimal(e["data"]["amount"]) for e in of_type(recent, "purchase"))
    refunded = sum(Decimal(e["data"]["amount"]) for e in of_type(recent, "refund"))
    return Decimal(bought) - Decimal(refunded)


def test_vips_spend_big_and_often(by_persona: dict[str, list[list[dict[str, Any]]]]) -> None:
    for history in by_persona["vip"]:
        assert len([e for e in of_type(history, "purchase") if days_ago(e) < 365]) >= 12
        assert spend_365d(history) >= 40_000


def test_important_customers_spend_mid(by_persona: dict[str, list[list[dict[str, Any]]]]) -> None:
    spends = [spend_365d(h) for h in by_persona["important"]]
    assert all(s < 50_000 for s in spends)
    assert sum(s >= 10_000 for s in spends) >= len(spends) * 0.8


def test_new_customers_first_bought_this_month(
    by_persona: dict[str, list[list[dict[str, Any]]]],
) -> None:
    for history in by_persona["new"]:
        assert max(days_ago(e) for e in of_type(history, "purchase")) < 30


def test_churned_customers_went_quiet(by_persona: dict[str, list[list[dict[str, Any]]]]) -> None:
    for history in by_persona["churned"]:
        assert min(days_ago(e) for e in history) >= 200


def test_prospects_never_bought(by_persona: dict[str, list[list[dict[str, Any]]]]) -> None:
    for history in by_persona["prospect"]:
        assert history
        assert {e["type"] for e in history} == {"interaction"}


def test_one_time_buyers_bought_once(by_persona: dict[str, list[list[dict[str, Any]]]]) -> None:
    for history in by_persona["one_time"]:
        assert len(of_type(history, "purchase")) == 1


def test_referrers_refer(by_persona: dict[str, list[list[dict[str, Any]]]]) -> None:
    for history in by_persona["referrer"]:
        referrals = [e for e in of_type(history, "interaction")
                     if e["data"]["action"] == "referral" and days_ago(e) < 365]
        assert len(referrals) >= 3


def test_feedback_personas(by_persona: dict[str, list[list[dict[str, Any]]]]) -> None:
    for history in by_persona["complainer"]:
        assert any(e["data"].get("complaint") for e in of_type(history, "feedback"))
    for history in by_persona["promoter"]:
        assert all(e["data"]["nps"] >= 9 for e in of_type(history, "feedback"))
    for history in by_persona["detractor"]:
        assert all(e["data"]["nps"] <= 6 for e in of_type(history, "feedback"))


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        generate(1, seed=1, now=datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


def test_frequent_buyers_buy_often_and_small(
    by_persona: dict[str, list[list[dict[str, Any]]]],
) -> None:
    for history in by_persona["frequent"]:
        assert len([e for e in of_type(history, "purchase") if days_ago(e) < 365]) >= 12
        assert spend_365d(history) < 10_000


# --- what the demo shows: `tierflow demo` as run without options, graded for real ----------

SCATTER = ("spend_365d", "orders_365d")  # the dashboard scatter's default x and y


@pytest.fixture(scope="module")
def demo_graded() -> tuple[ActivePolicy, dict[str, CustomerState], dict[str, Metrics]]:
    """The history `tierflow demo` sends by default (its size and seed, as its command line
    reads them), folded and graded under the default policy by the grader's own pure
    code; each customer's state and scatter metrics, as of NOW."""
    options = build_parser().parse_args(["demo"])
    active = ActivePolicy.from_document(1, default_policy_document())
    states: dict[str, CustomerState] = {}
    for doc in generate(options.customers, seed=options.seed, now=NOW):
        state = states.setdefault(doc["customer_id"], CustomerState.new(doc["customer_id"]))
        apply(state.aggregates, parse_event_obj(doc))
    assert len(states) == options.customers  # every customer sends at least one event
    metrics = {}
    for cid, state in states.items():
        grade_customer(state, active, now=NOW, today=NOW.date(), reason="event")
        metrics[cid] = compute_metrics(state.aggregates, NOW.date(), SCATTER)
    return active, states, metrics


def test_the_demo_fills_every_tier_of_every_ladder(
    demo_graded: tuple[ActivePolicy, dict[str, CustomerState], dict[str, Metrics]],
) -> None:
    """Every bar of the dashboard's distribution has customers (at least 1% of them)."""
    active, states, _ = demo_graded
    for ladder in active.policy.ladders:
        counts = Counter(state.ladders[ladder.name].tier for state in states.values())
        for tier in ladder.tiers:
            assert counts[tier.name] >= len(states) // 100, (ladder.name, tier.name, counts)


def test_the_demo_fills_every_quadrant_of_the_scatter(
    demo_graded: tuple[ActivePolicy, dict[str, CustomerState], dict[str, Metrics]],
) -> None:
    """Value against loyalty, split where the page draws its lines (the `tier` ladder's
    lowest bars: spend_365d 10,000 and orders_365d 12): each quadrant holds at least 2%
    of the customers."""
    active, states, metrics = demo_graded
    ladder = active.policy.ladders[0]  # the scatter's default ladder
    x_line, y_line = (threshold(active, ladder, metric) for metric in SCATTER)
    assert (ladder.name, x_line, y_line) == ("tier", 10_000, 12)
    quadrants: Counter[tuple[bool, bool]] = Counter()
    for figures in metrics.values():
        spend, orders = figures["spend_365d"], figures["orders_365d"]
        assert spend is not None and orders is not None
        quadrants[spend >= x_line, orders >= y_line] += 1
    for quadrant in ((True, True), (True, False), (False, True), (False, False)):
        assert quadrants[quadrant] >= len(states) * 0.02, quadrants
