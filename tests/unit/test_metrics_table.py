"""Event histories → expected metrics (CONTRACT §4.1), as one parametrised table."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.grader.grading.metrics import METRIC_NAMES, WINDOWS, compute_metrics, metrics_json
from shared.events import Event
from tests.unit.factories import (
    TODAY,
    at,
    feedback,
    fold,
    interaction,
    metrics_of,
    purchase,
    refund,
)

D = Decimal
EMPTY: dict[str, object] = {
    **{name: 0 for name in METRIC_NAMES},
    **{f"spend_{n}d": D(0) for n in WINDOWS},
    "spend_total": D(0),
    "avg_order_value_365d": None,
    "days_since_first_purchase": None,
    "days_since_last_purchase": None,
    "days_since_last_interaction": None,
    "days_since_last_activity": None,
    "avg_rating": None,
    "last_nps": None,
}


def _window_boundary_cases() -> list[object]:
    cases: list[object] = []
    for n in WINDOWS:
        events = [purchase("10", at(n - 1)), purchase("1", at(n)),
                  interaction(at(n - 1)), interaction(at(n))]
        expected = {f"spend_{n}d": D(10), f"orders_{n}d": 1, f"interactions_{n}d": 1}
        cases.append(pytest.param(events, expected, id=f"boundary-{n}d"))
    return cases


TABLE = [
    pytest.param([], EMPTY, id="no-events-everything-zero-or-null"),
    pytest.param(
        [purchase("1299.00", at(0), category="shoes")],
        {"spend_total": D("1299.00"), **{f"spend_{n}d": D("1299.00") for n in WINDOWS},
         "orders_total": 1, **{f"orders_{n}d": 1 for n in WINDOWS},
         "avg_order_value_365d": D("1299.0000"), "days_since_first_purchase": 0,
         "days_since_last_purchase": 0, "days_since_last_activity": 0,
         "days_since_last_interaction": None, "distinct_categories": 1},
        id="one-purchase-today",
    ),
    *_window_boundary_cases(),
    pytest.param(
        [purchase("5", at(7)), purchase("5", at(400))],
        {"spend_7d": D(0), "spend_30d": D(5), "spend_365d": D(5), "spend_total": D(10)},
        id="older-than-every-window-counts-in-total-only",
    ),
    # 07:59 +08:00 on TODAY-6 is 23:59Z on TODAY-7: outside the 7-day window.
    pytest.param(
        [purchase("3", at(6, "07:59:00", "+08:00")), purchase("4", at(6, "08:00:00", "+08:00"))],
        {"spend_7d": D(4), "orders_7d": 1, "spend_30d": D(7), "orders_30d": 2},
        id="plus-0800-early-morning-is-previous-utc-date",
    ),
    # 23:59 +08:00 stays on its own UTC date (15:59Z); 23:59 -08:00 moves to the next one.
    pytest.param(
        [purchase("3", at(7, "23:59:00", "+08:00")), purchase("4", at(7, "23:59:00", "-08:00"))],
        {"spend_7d": D(4), "orders_7d": 1, "days_since_first_purchase": 7,
         "days_since_last_purchase": 6},
        id="late-evening-offsets",
    ),
    pytest.param(
        [purchase("100", at(40)), refund("30", at(3))],
        {"spend_total": D(70), "spend_7d": D(0), "spend_30d": D(0), "spend_90d": D(70),
         "orders_7d": 0, "orders_90d": 1, "days_since_last_activity": 3,
         "days_since_last_purchase": 40},
        id="refund-counts-on-its-own-date-windows-never-negative",
    ),
    pytest.param(
        [purchase("100", at(2)), purchase("50", at(1)), refund("30", at(1))],
        {"spend_total": D(120), "spend_7d": D(120), "avg_order_value_365d": D("60.0000")},
        id="refund-reduces-window-spend",
    ),
    pytest.param(
        [purchase("10", at(3)), refund("50", at(2))],
        {"spend_total": D(0), **{f"spend_{n}d": D(0) for n in WINDOWS},
         "avg_order_value_365d": D("0.0000"), "orders_total": 1},
        id="refunds-above-purchases-clamp-to-zero",
    ),
    pytest.param(
        [refund("50", at(2))],
        {"spend_total": D(0), "spend_7d": D(0), "orders_total": 0,
         "avg_order_value_365d": None, "days_since_last_activity": 2,
         "days_since_first_purchase": None},
        id="refund-alone",
    ),
    pytest.param(
        [purchase("100", at(1)), purchase("100", at(2)), purchase("100.5", at(3))],
        {"avg_order_value_365d": D("100.1667"), "orders_365d": 3},
        id="avg-order-value-four-places",
    ),
    pytest.param(
        [purchase("100", at(400))],
        {"avg_order_value_365d": None, "orders_total": 1, "orders_365d": 0,
         "days_since_first_purchase": 400},
        id="avg-order-value-null-without-orders-in-365d",
    ),
    pytest.param(
        [purchase("1", at(10)), purchase("1", at(3)), interaction(at(1))],
        {"days_since_first_purchase": 10, "days_since_last_purchase": 3,
         "days_since_last_interaction": 1, "days_since_last_activity": 1},
        id="days-since",
    ),
    pytest.param(
        [interaction(at(5)), feedback(at(2), rating=4)],
        {"days_since_first_purchase": None, "days_since_last_purchase": None,
         "days_since_last_interaction": 5, "days_since_last_activity": 2},
        id="days-since-purchase-null-without-purchases",
    ),
    pytest.param(
        [purchase("1", at(1), category="shoes"), purchase("1", at(2), category="shoes"),
         purchase("1", at(3), category="bags"), purchase("1", at(4), category=""),
         purchase("1", at(5)), purchase("1", at(900), category="hats")],
        {"distinct_categories": 3},
        id="distinct-categories-all-time-ignoring-empty",
    ),
    pytest.param(
        [interaction(at(10), action="referral"), interaction(at(364), action="referral"),
         interaction(at(365), action="referral"), interaction(at(1), channel="referral"),
         interaction(at(1), action="click")],
        {"referrals_total": 3, "referrals_365d": 2, "interactions_total": 5,
         "interactions_7d": 2, "interactions_365d": 4},
        id="referrals-only-from-action-referral",
    ),
    pytest.param(
        [feedback(at(89), complaint=True), feedback(at(90), complaint=True),
         feedback(at(364), complaint=True), feedback(at(365), complaint=True),
         feedback(at(1), complaint=False, rating=2)],
        {"complaints_total": 4, "complaints_90d": 1, "complaints_365d": 3,
         "ratings_count": 1, "avg_rating": D("2.0000"), "last_nps": None},
        id="complaint-windows-90-365",
    ),
    pytest.param(
        [feedback(at(1), rating=5), feedback(at(500), rating=4), feedback(at(3), rating=4),
         feedback(at(2), nps=8)],
        {"avg_rating": D("4.3333"), "ratings_count": 3, "last_nps": 8},
        id="avg-rating-all-time",
    ),
    # Arrival order is the list order: the latest answer by occurred_at wins, not the last.
    pytest.param(
        [feedback(at(0), nps=9), feedback(at(1), nps=3), feedback(at(2), nps=0, rating=1)],
        {"last_nps": 9},
        id="last-nps-by-occurred-at-not-arrival",
    ),
    # 07:00 +08:00 is 23:00Z the day before: 23:30Z is later, though its text sorts first.
    pytest.param(
        [feedback(at(1, "23:30:00"), nps=2), feedback(at(0, "07:00:00", "+08:00"), nps=10)],
        {"last_nps": 2},
        id="last-nps-compares-instants-across-offsets",
    ),
    pytest.param(
        [feedback(at(0), nps=0)],
        {"last_nps": 0, "avg_rating": None, "ratings_count": 0},
        id="last-nps-zero-is-not-null",
    ),
    pytest.param(
        [purchase("10", at(-1, "00:01:00")), purchase("5", at(5)),
         interaction(at(-1, "00:02:00")), feedback(at(-1, "00:03:00"), complaint=True)],
        {"spend_total": D(15), "orders_total": 2, "spend_7d": D(5), "orders_7d": 1,
         "spend_365d": D(5), "interactions_total": 1, "interactions_7d": 0,
         "complaints_total": 1, "complaints_90d": 0, "days_since_first_purchase": 5,
         "days_since_last_purchase": 0, "days_since_last_interaction": 0,
         "days_since_last_activity": 0},
        id="future-dated-event-no-window-never-negative",
    ),
]


@pytest.mark.parametrize(("events", "expected"), TABLE)
def test_metrics(events: list[Event], expected: dict[str, object]) -> None:
    metrics = metrics_of(events)
    assert {name: metrics[name] for name in expected} == expected
    # Decimal equality ignores the exponent; money must also keep its exact form.
    for name, value in expected.items():
        if isinstance(value, Decimal) and name == "avg_order_value_365d":
            assert str(metrics[name]) == str(value)


def test_every_metric_is_computed_and_covered() -> None:
    assert tuple(compute_metrics(fold([]), TODAY)) == METRIC_NAMES
    covered = set().union(*(case.values[1] for case in TABLE))  # type: ignore[attr-defined]
    assert covered == set(METRIC_NAMES)


def test_metrics_are_per_day_not_per_event_order() -> None:
    events = [purchase("1.50", at(1)), refund("0.50", at(1)), purchase("2", at(0))]
    assert metrics_of(events) == metrics_of(list(reversed(events)))


def test_windows_slide_with_today() -> None:
    agg = fold([purchase("10", at(0)), interaction(at(0))])
    later = compute_metrics(agg, TODAY.replace(day=TODAY.day + 7))
    assert later["spend_7d"] == 0
    assert later["spend_30d"] == 10
    assert later["days_since_last_activity"] == 7


def test_metrics_json_money_as_strings() -> None:
    metrics = metrics_of([purchase("51200.00", at(1)), purchase("0.5", at(2))])
    doc = metrics_json(metrics, ("spend_365d", "orders_365d", "avg_order_value_365d",
                                 "last_nps"))
    assert doc == {"spend_365d": "51200.50", "orders_365d": 2,
                   "avg_order_value_365d": "25600.2500", "last_nps": None}
    assert set(metrics_json(metrics)) == set(METRIC_NAMES)
