"""Poison never stalls a partition: anything ingest accepts is either graded and stored, or
refused with a reason (the grader dead-letters it) — never an exception that would make
the consumer retry the same batch for ever. Pure: the grader's per-record steps, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiokafka import ConsumerRecord
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from services.grader.grading.aggregates import FoldError, apply
from services.grader.grading.customer import CustomerState, grade_customer
from services.grader.grading.policy import ActivePolicy, default_policy_document
from services.grader.intake import validate
from services.grader.repository import Checkpoint, decode_state
from services.ingest.validation import Rejection, Rules, validate_json
from tests.unit.test_events_fast import mutated_docs, to_json, valid_docs

NOW = datetime.now(UTC)
RULES = Rules(base_currency="CNY", max_future_seconds=300)
ACTIVE = ActivePolicy.from_document(1, default_policy_document())
POISON = settings(derandomize=True, database=None, deadline=None, max_examples=150,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def record(value: bytes) -> ConsumerRecord:
    """The message as the grader's consumer receives it."""
    stamp = int(NOW.timestamp() * 1000)
    return ConsumerRecord("events", 0, 0, stamp, 0, None, value, None, len(value), 0, [])


def grade_and_store(state: CustomerState, events: list[Any]) -> int:
    """Fold each event (a FoldError is a dead letter), grade, build the checkpoint rows and
    read the stored state back; how many were dead-lettered."""
    dead = 0
    for event in events:
        try:
            apply(state.aggregates, event)
        except FoldError as exc:
            assert str(exc)  # the DLQ header says why
            dead += 1
    changes = grade_customer(state, ACTIVE, now=NOW, today=NOW.date(), reason="event")
    cp = Checkpoint.build(topic="events", advances=[], event_keys=[], renewed=[],
                          customers=[(0, state)], changes=changes, now=NOW)
    for row in cp.customer_rows:
        assert "\x00" not in row[0]
        assert decode_state(row[0], row[2], row[4], row[5]) is not None
    for row in cp.outbox_rows:
        assert "\x00" not in row[5]  # PostgreSQL text and jsonb refuse NUL
    return dead


def as_sent(doc: dict[str, Any]) -> bytes:
    """The document's JSON bytes, as a client would send them."""
    return to_json(doc, ascii_only=False).encode("utf-8", "surrogatepass")


def ingest_accepts(raw: bytes) -> bool:
    """Would ingest answer 202?"""
    return not isinstance(validate_json(raw, rules=RULES, latest=RULES.latest(NOW)), Rejection)


def accepted(doc: dict[str, Any]) -> bytes:
    """The bytes of a document ingest accepts (the example is skipped otherwise)."""
    raw = as_sent(doc)
    assume(ingest_accepts(raw))
    return raw


@POISON
@given(st.one_of(valid_docs(), mutated_docs()).filter(lambda doc: ingest_accepts(as_sent(doc))))
def test_anything_ingest_accepts_is_graded_or_dead_lettered(doc: dict[str, Any]) -> None:
    raw = accepted(doc)
    event, error, _ = validate(record(raw), currency="CNY", max_future_s=300)
    assert event is not None, f"ingest accepted what the grader refuses: {error}"
    grade_and_store(CustomerState(event.customer_id), [event])


# Each document is drawn until ingest accepts it: a list is kept whole (an `assume` on
# the list threw away ~60 lists for every one tested, over a minute of generation).
@settings(POISON, max_examples=50)
@given(st.lists(valid_docs().filter(lambda doc: ingest_accepts(as_sent(doc))),
                min_size=1, max_size=40))
def test_many_events_for_one_customer_fold_or_are_refused(docs: list[dict[str, Any]]) -> None:
    events = []
    for doc in docs:
        doc["customer_id"] = "c-1"
        event, _, _ = validate(record(accepted(doc)), currency="CNY", max_future_s=300)
        assert event is not None
        events.append(event)
    grade_and_store(CustomerState("c-1"), events)


def test_a_thousand_refunds_of_the_maximum_fold_until_the_total_is_full() -> None:
    """Found in production: 1,000 refunds of 1e12 for one customer on one day stalled the
    partition ("Integer exceeds 64-bit range"). Now 922 fold and 78 are refused."""
    doc = {"event_id": "r", "type": "refund", "customer_id": "c-1",
           "occurred_at": (NOW - timedelta(hours=1)).isoformat(),
           "data": {"amount": "1000000000000", "currency": "CNY"}}
    raw = as_sent(doc)
    assert ingest_accepts(raw)
    event, _, _ = validate(record(raw), currency="CNY", max_future_s=300)
    state = CustomerState("c-1")
    assert grade_and_store(state, [event] * 1000) == 78
    assert state.aggregates.refunds_total == 922 * Decimal("1e12") * 10_000


def test_nul_in_a_category_is_refused_by_ingest_and_by_the_grader() -> None:
    """Found in production: a purchase with a NUL in `data.category` was accepted (202)
    and every batch after it failed."""
    doc = {"event_id": "p", "type": "purchase", "customer_id": "c-1",
           "occurred_at": NOW.isoformat(),
           "data": {"amount": "10.00", "currency": "CNY", "category": "sh\x00oes"}}
    raw = to_json(doc, ascii_only=False).encode("utf-8", "surrogatepass")
    verdict = validate_json(raw, rules=RULES, latest=RULES.latest(NOW))
    assert isinstance(verdict, Rejection)
    assert verdict.errors == [{"field": "data.category",
                               "reason": "must not contain NUL characters"}]
    event, error, reason = validate(record(raw), currency="CNY", max_future_s=300)
    assert event is None and "NUL" in error and reason == "invalid"
