"""Ingest's own rules and batch handling, pure (no HTTP, no broker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from services.ingest.batch import (
    BatchShapeInvalid,
    TooManyEvents,
    check_item,
    claimed,
    settle,
    split_batch,
)
from services.ingest.validation import (
    MalformedJson,
    Rejection,
    Rules,
    validate_json,
    validate_obj,
)
from shared.errors import BrokerUnavailable
from shared.events import Event

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
RULES = Rules(base_currency="CNY", max_future_seconds=300)
LATEST = RULES.latest(NOW)


def purchase(event_id: str = "e-1", **data: Any) -> dict[str, Any]:
    return {
        "event_id": event_id, "type": "purchase", "customer_id": "c-1",
        "occurred_at": NOW.isoformat(), "data": {"amount": "10.00", "currency": "CNY", **data},
    }


def test_valid_event_passes() -> None:
    assert not isinstance(validate_obj(purchase(), rules=RULES, latest=LATEST), Rejection)


def test_future_limit_is_inclusive() -> None:
    doc = purchase()
    doc["occurred_at"] = (NOW + timedelta(seconds=300)).isoformat()
    assert not isinstance(validate_obj(doc, rules=RULES, latest=LATEST), Rejection)
    doc["occurred_at"] = (NOW + timedelta(seconds=301)).isoformat()
    rejection = validate_obj(doc, rules=RULES, latest=LATEST)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == "future"
    assert rejection.errors[0]["field"] == "occurred_at"


def test_past_events_are_fine() -> None:
    doc = purchase()
    doc["occurred_at"] = "2001-01-01T00:00:00Z"
    assert not isinstance(validate_obj(doc, rules=RULES, latest=LATEST), Rejection)


@pytest.mark.parametrize("kind", ["purchase", "refund"])
def test_currency_must_be_base(kind: str) -> None:
    doc = purchase(currency="USD")
    doc["type"] = kind
    rejection = validate_obj(doc, rules=RULES, latest=LATEST)
    assert rejection == Rejection(
        "currency", [{"field": "data.currency", "reason": "must be the base currency CNY"}]
    )


def test_schema_errors_drop_union_tag() -> None:
    rejection = validate_obj(purchase(amount="0.00001", extra=1), rules=RULES, latest=LATEST)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == "validation"
    assert {e["field"] for e in rejection.errors} == {"data.amount", "data.extra"}
    amount = next(e for e in rejection.errors if e["field"] == "data.amount")
    assert amount["reason"] == "at most 4 decimal places"


@pytest.mark.parametrize("doc", [{"event_id": "e"}, {"type": "bogus"}])
def test_missing_or_unknown_type_names_the_type_field(doc: dict[str, Any]) -> None:
    rejection = validate_obj(doc, rules=RULES, latest=LATEST)
    assert isinstance(rejection, Rejection)
    assert rejection.errors == [
        {"field": "type", "reason": "must be one of purchase, refund, interaction, feedback"}
    ]


def test_validate_json_tells_malformed_from_invalid() -> None:
    malformed = validate_json(b'{"event_id":', rules=RULES, latest=LATEST)
    assert isinstance(malformed, Rejection)
    assert malformed.reason == "malformed"
    invalid = validate_json(b"{}", rules=RULES, latest=LATEST)
    assert isinstance(invalid, Rejection)
    assert invalid.reason == "validation"


def test_split_json_batch() -> None:
    body = orjson.dumps({"events": [purchase("a"), 5]})
    assert split_batch(body, ndjson=False, max_events=2) == [purchase("a"), 5]


@pytest.mark.parametrize(
    "body", [b"[]", b'{"events": {}}', b'{"events": [], "more": 1}', b'{"items": []}']
)
def test_split_json_batch_shape(body: bytes) -> None:
    with pytest.raises(BatchShapeInvalid):
        split_batch(body, ndjson=False, max_events=10)


def test_split_json_batch_malformed_and_too_many() -> None:
    with pytest.raises(MalformedJson):
        split_batch(b'{"events": [', ndjson=False, max_events=10)
    with pytest.raises(TooManyEvents):
        split_batch(orjson.dumps({"events": [{}] * 3}), ndjson=False, max_events=2)


def test_split_ndjson_skips_blank_lines() -> None:
    body = b'{"a": 1}\r\n\n  \n{"b": 2}\n'
    assert split_batch(body, ndjson=True, max_events=2) == [b'{"a": 1}\r', b'{"b": 2}']
    with pytest.raises(TooManyEvents):
        split_batch(body, ndjson=True, max_events=1)


def test_check_item_decodes_lines() -> None:
    line = orjson.dumps(purchase())
    from_line = check_item(line, rules=RULES, latest=LATEST)
    assert from_line == check_item(purchase(), rules=RULES, latest=LATEST)
    broken = check_item(b"{nope", rules=RULES, latest=LATEST)
    assert isinstance(broken, Rejection)
    assert broken.reason == "malformed"


@pytest.mark.parametrize(
    ("item", "expected"),
    [({"event_id": "x", "type": "refund"}, ("x", "refund")),
     ({"event_id": 7, "type": "weird"}, (None, "unknown")),
     (b'{"event_id": "y", "type": "feedback"}', ("y", "feedback")),
     (b"{broken", (None, "unknown")), ([1], (None, "unknown"))],
)
def test_claimed(item: object, expected: tuple[str | None, str]) -> None:
    assert claimed(item) == expected


def test_settle_joins_results_in_order() -> None:
    items: list[object] = [purchase("a"), {"event_id": "b"}, purchase("c")]
    checked: list[Event | Rejection] = [check_item(i, rules=RULES, latest=LATEST) for i in items]
    settled = settle(items, checked, [None, BrokerUnavailable("no ack")])
    assert [r["status"] for r in settled.results] == ["accepted", "rejected", "unavailable"]
    assert [r["event_id"] for r in settled.results] == ["a", "b", "c"]
    assert settled.outcomes == [
        ("purchase", "accepted"), ("unknown", "rejected"), ("purchase", "unavailable")
    ]
    assert settled.reasons == [("unknown", "validation")]
    answer = settled.answer()
    assert (answer["accepted"], answer["rejected"], answer["unavailable"]) == (1, 1, 1)
    assert settled.results[2]["errors"][0]["reason"].startswith("no ack")


def test_answer_omits_unavailable_when_none() -> None:
    items: list[object] = [purchase("a")]
    settled = settle(items, [check_item(items[0], rules=RULES, latest=LATEST)], [None])
    assert settled.answer() == {
        "accepted": 1, "rejected": 0,
        "results": [{"index": 0, "event_id": "a", "status": "accepted", "errors": []}],
    }
