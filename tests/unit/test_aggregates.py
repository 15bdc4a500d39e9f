"""The aggregates fold: apply, advance (sliding windows), dedupe, the bounds of the state,
and its stored (binary) form."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from services.grader.grading.aggregates import (
    CATEGORY_CAP,
    Aggregates,
    FoldError,
    advance,
    apply,
    dedupe,
    utc_date,
)
from services.grader.grading.customer import CustomerState
from services.grader.grading.evaluate import LadderState, Override
from services.grader.grading.metrics import compute_metrics
from services.grader.repository import StateCorrupt, decode_state, encode_state, tiers_literal
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


def test_advance_keeps_exactly_what_the_365_day_window_sees() -> None:
    agg = fold([purchase("1", at(n)) for n in (0, 364, 365, 800)])
    advance(agg, TODAY.toordinal())
    assert sorted(agg.days) == [day(364).toordinal(), day(0).toordinal()]
    # Totals and first/last dates are all-time: pruning never touches them.
    assert agg.orders_total == 4
    assert agg.first_purchase == day(800).toordinal()


def test_advance_never_changes_metrics_of_today_or_later() -> None:
    agg = fold([purchase(str(n + 1), at(n)) for n in range(0, 900, 7)])
    for later in (TODAY, TODAY + timedelta(days=1), TODAY + timedelta(days=200)):
        before = compute_metrics(agg, later)
        moved = advance(round_trip(agg), TODAY.toordinal())
        assert compute_metrics(moved, later) == before
        assert compute_metrics(advance(moved, later.toordinal()), later) == before


def test_running_sums_slide_day_by_day_like_a_recomputation() -> None:
    events = [purchase(str(n + 2), at(n)) for n in range(-1, 400, 3)]
    slid = advance(fold(events), (TODAY - timedelta(days=400)).toordinal())
    for step in range(0, 402, 1):
        today = TODAY - timedelta(days=400) + timedelta(days=step)
        advance(slid, today.toordinal())
        assert compute_metrics(slid, today) == compute_metrics(fold(events), today), today


def test_events_folded_after_advance_land_in_the_right_windows() -> None:
    early = [purchase("5", at(n)) for n in (0, 6, 7, 29, 30, 364, 365, -1)]
    agg = advance(Aggregates(), TODAY.toordinal())
    for event in early:
        apply(agg, event)
    assert compute_metrics(agg, TODAY) == compute_metrics(fold(early), TODAY)
    assert max(agg.days) == (TODAY + timedelta(days=1)).toordinal()  # skew: tomorrow
    assert min(agg.days) >= (TODAY - timedelta(days=364)).toordinal()


def test_categories_are_exact_up_to_the_cap_and_stay_there() -> None:
    names = [f"cat-{n}" for n in range(CATEGORY_CAP + 20)]
    agg = fold([purchase("1", at(0), category=name) for name in names])
    assert compute_metrics(agg, TODAY)["distinct_categories"] == CATEGORY_CAP
    assert len(agg.categories) == CATEGORY_CAP
    few = fold([purchase("1", at(0), category=n) for n in names[:7] * 3])
    assert compute_metrics(few, TODAY)["distinct_categories"] == 7


def test_a_total_past_64_bits_is_refused_before_anything_changes() -> None:
    agg = Aggregates()
    big = refund("1000000000000", at(0))
    taken = 0
    with pytest.raises(FoldError, match="supported range"):
        for _ in range(1000):
            apply(agg, big)
            taken += 1
    assert taken == 922  # 922 x 1e16 ten-thousandths fit in 2^63 - 1; the next would not
    assert agg.refunds_total == 922 * 10**16
    assert encode_state(CustomerState("c", agg))  # and what was taken still stores


def test_dedupe_keeps_first_occurrence_in_order() -> None:
    a1 = purchase("1", at(0), event_id="a")
    a2 = purchase("99", at(0), event_id="a")
    b = refund("1", at(0), event_id="b")
    assert dedupe([a1, b, a2, b]) == [a1, b]
    assert dedupe([]) == []


def round_trip(agg: Aggregates) -> Aggregates:
    """Through the stored form (bytes) and back."""
    blob = encode_state(CustomerState("c", agg))
    return decode_state("c", blob, 0, TODAY).aggregates


def test_stored_form_round_trips() -> None:
    agg = fold([
        purchase("1299.0001", at(2, "07:00:00", "+08:00"), category="shoes"),
        purchase("1", at(400), category="bags"), refund("9.5", at(1)),
        interaction(at(1), action="referral"), feedback(at(0, "00:00:00.123456"), nps=4),
        feedback(at(3), rating=2, complaint=True),
    ])
    assert round_trip(agg) == agg
    advance(agg, TODAY.toordinal())
    assert round_trip(agg) == agg
    assert agg.purchases_total == 13_000_001  # money as exact integer ten-thousandths


def test_stored_form_of_empty_aggregates() -> None:
    assert round_trip(Aggregates()) == Aggregates()


def full_state() -> CustomerState:
    """A customer with every part of the stored form: figures, a ladder with a grace
    period under way, an override with an expiry, a dedupe salt."""
    state = CustomerState("c-1", fold([purchase("120.50", at(3)),
                                       feedback(at(1), nps=9, complaint=True)]))
    state.aggregates.categories.add("books")
    state.ladders = {"tier": LadderState(
        "gold", datetime(2026, 11, 1, 8, 30, 0, 123456, tzinfo=UTC), "silver",
        date(2026, 11, 15), 4)}
    state.overrides = {"tier": Override(
        "gold", "key account", datetime(2026, 11, 2, tzinfo=UTC),
        datetime(2027, 1, 1, 12, tzinfo=UTC))}
    state.salt = bytes(range(16))
    return state


def test_a_whole_state_round_trips() -> None:
    state = full_state()
    back = decode_state("c-1", encode_state(state), 0, date.fromordinal(1))
    back.graded_on = 0
    assert back == state


# A row stored by format 1 (instants as integer microseconds since 1970): `full_state()`
# as the grader wrote it before format 2.
FORMAT_1_ROW = bytes.fromhex(
    "dc001601ce001263080001ce000b4a61ce000b4a6191a5626f6f6b73000001c0ce000b4a6300000992cf"
    "0006609fddf2b000a465762d32c082ce000b4a6195ce0012630801000000ce000b4a6395000000000195"
    "9500000000009500000000009500000000009500000000009500000000009196a474696572a4676f6c64"
    "cf00065f32d5cb1440a673696c766572ce000b4a5f049196a474696572a4676f6c64ab6b657920616363"
    "6f756e74cf00065f3fd3b9a000cf00066400e11fd000c2c410000102030405060708090a0b0c0d0e0f")


# The same state as format 2 wrote it (one flat array, instants as msgpack timestamps).
FORMAT_2_ROW = bytes.fromhex(
    "dc001602ce001263080001ce000b4a61ce000b4a6191a5626f6f6b73000001c0ce000b4a6300000992cf"
    "0006609fddf2b000a465762d32c082ce000b4a6195ce0012630801000000ce000b4a6395000000000195"
    "9500000000009500000000009500000000009500000000009500000000009196a474696572a4676f6c64"
    "d7ff1d6f28006ae6f888a673696c766572ce000b4a5f049196a474696572a4676f6c64ab6b6579206163"
    "636f756e74d6ff6ae7d280d6ff6b379540c2c410000102030405060708090a0b0c0d0e0f")


@pytest.mark.parametrize("row", [FORMAT_1_ROW, FORMAT_2_ROW], ids=["format 1", "format 2"])
def test_rows_of_earlier_formats_are_still_read(row: bytes) -> None:
    back = decode_state("c-1", row, 0, date.fromordinal(1))
    back.graded_on = 0
    expected = full_state()
    assert back.aggregates.last_nps_key == (1795089600000000, "ev-2")
    expected.aggregates.last_nps_key = back.aggregates.last_nps_key  # (another event id)
    assert back == expected
    assert back.ladders["tier"].since.tzinfo is not None
    # ... and written again in the current format, which reads back the same.
    again = decode_state("c-1", encode_state(back), 0, date.fromordinal(1))
    again.graded_on = 0
    assert again == back


@pytest.mark.parametrize("blob", [b"", b"\x95\x03", b"\x95\x03\x01\x02\x03\x04",
                                  b"\xc1", b"\x91\x07"])
def test_an_unreadable_state_is_corrupt(blob: bytes) -> None:
    with pytest.raises(StateCorrupt):
        decode_state("c-1", blob, 0, date.fromordinal(1))


def test_tiers_are_staged_as_an_array_literal() -> None:
    state = full_state()
    state.ladders["basket"] = state.ladders["tier"]
    assert tiers_literal(state) == '{"tier:gold","basket:gold"}'
    assert tiers_literal(CustomerState("c-2")) == "{}"
