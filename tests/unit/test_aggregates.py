"""The aggregates fold: apply, prune, dedupe and the JSON form of the state."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone

from services.grader.grading.aggregates import (
    Aggregates,
    apply,
    dedupe,
    from_json,
    prune,
    to_json,
    utc_date,
)
from services.grader.grading.metrics import compute_metrics
from tests.unit.factories import TODAY, at, day, feedback, fold, interaction, purchase, refund


def test_utc_date_converts_offsets() -> None:
    plus8 = timezone(timedelta(hours=8))
    assert utc_date(datetime(2026, 11, 20, 7, 59, tzinfo=plus8)) == date(2026, 11, 19)
    assert utc_date(datetime(2026, 11, 20, 8, 0, tzinfo=plus8)) == date(2026, 11, 20)
    assert utc_date(datetime(2026, 11, 20, 23, 59, tzinfo=UTC)) == date(2026, 11, 20)


def test_apply_returns_the_same_object_mutated() -> None:
    agg = Aggregates()
    assert apply(agg, purchase("1", at(0))) is agg
    assert agg.orders_total == 1


def test_purchase_and_refund_fill_one_day_bucket() -> None:
    agg = fold([purchase("10.25", at(2), category="shoes"), refund("0.25", at(2))])
    # Money in exact ten-thousandths, days as ordinals.
    assert agg.purchases_total == 102_500
    assert agg.refunds_total == 2_500
    assert agg.days == {day(2).toordinal(): [100_000, 1, 0, 0, 0]}
    assert agg.first_purchase == agg.last_purchase == agg.last_activity == day(2).toordinal()
    assert agg.categories == {"shoes"}


def test_interaction_and_feedback_fold() -> None:
    agg = fold([
        interaction(at(3), action="referral"), interaction(at(1)),
        feedback(at(2), rating=5, nps=9, complaint=True), feedback(at(4), nps=1),
    ])
    assert (agg.interactions_total, agg.referrals_total, agg.complaints_total) == (2, 1, 1)
    assert agg.last_interaction == day(1).toordinal()
    assert agg.last_activity == day(1).toordinal()
    assert (agg.rating_sum, agg.ratings_count, agg.last_nps) == (5, 1, 9)
    assert agg.days[day(3).toordinal()] == [0, 0, 1, 1, 0]
    assert agg.days[day(2).toordinal()] == [0, 0, 0, 0, 1]


def test_last_nps_tie_on_instant_is_broken_by_event_id() -> None:
    same = at(1, "10:00:00")
    a = feedback(same, nps=3, event_id="fb-a")
    b = feedback(at(1, "18:00:00", "+08:00"), nps=7, event_id="fb-b")  # the same instant
    assert fold([a, b]).last_nps == fold([b, a]).last_nps == 7


def test_prune_keeps_exactly_what_the_365_day_window_sees() -> None:
    agg = fold([purchase("1", at(n)) for n in (0, 364, 365, 800)])
    prune(agg, TODAY)
    assert sorted(agg.days) == [day(364).toordinal(), day(0).toordinal()]
    # Totals and first/last dates are all-time: pruning never touches them.
    assert agg.orders_total == 4
    assert agg.first_purchase == day(800).toordinal()


def test_prune_never_changes_metrics_of_today_or_later() -> None:
    agg = fold([purchase(str(n + 1), at(n)) for n in range(0, 900, 7)])
    for later in (TODAY, TODAY + timedelta(days=1), TODAY + timedelta(days=200)):
        before = compute_metrics(agg, later)
        assert compute_metrics(prune(from_json(to_json(agg)), TODAY), later) == before


def test_dedupe_keeps_first_occurrence_in_order() -> None:
    a1 = purchase("1", at(0), event_id="a")
    a2 = purchase("99", at(0), event_id="a")
    b = refund("1", at(0), event_id="b")
    assert dedupe([a1, b, a2, b]) == [a1, b]
    assert dedupe([]) == []


def test_json_round_trip_through_text() -> None:
    agg = fold([
        purchase("1299.0001", at(2, "07:00:00", "+08:00"), category="shoes"),
        purchase("1", at(400), category="bags"), refund("9.5", at(1)),
        interaction(at(1), action="referral"), feedback(at(0, "00:00:00.123456"), nps=4),
        feedback(at(3), rating=2, complaint=True),
    ])
    doc = json.loads(json.dumps(to_json(agg)))
    back = from_json(doc)
    assert back == agg
    assert to_json(back) == to_json(agg)
    assert doc["p"] == 13_000_001  # money as exact integer ten-thousandths


def test_json_round_trip_of_empty_aggregates() -> None:
    assert from_json(json.loads(json.dumps(to_json(Aggregates())))) == Aggregates()
