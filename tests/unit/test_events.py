"""The event schema of contract §3, rule by rule (shared.events, no I/O)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from shared.events import event_json, parse_event, parse_event_obj, too_far_in_future

BASE: dict[str, dict[str, Any]] = {
    "purchase": {"amount": "1299.00", "currency": "CNY", "order_id": "o-88",
                 "category": "shoes", "quantity": 1},
    "refund": {"amount": "10.5", "currency": "CNY"},
    "interaction": {"channel": "web", "action": "visit"},
    "feedback": {"rating": 5},
}


def event(kind: str = "purchase", **fields: Any) -> dict[str, Any]:
    """A valid event of `kind`, with top-level fields replaced (None removes one)."""
    doc: dict[str, Any] = {
        "event_id": "pos-7781-1", "type": kind, "customer_id": "c-1042",
        "occurred_at": "2026-11-20T10:15:00+08:00", "source": "pos",
        "data": copy.deepcopy(BASE[kind]),
    }
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not None}


def with_data(kind: str, **data: Any) -> dict[str, Any]:
    """A valid event of `kind` with data fields replaced (None removes one)."""
    merged = {**BASE[kind], **data}
    return event(kind, data={k: v for k, v in merged.items() if v is not None})


def raw(doc: dict[str, Any]) -> bytes:
    # stdlib json: orjson refuses integers beyond 64 bits, which some tests send.
    return json.dumps(doc).encode()


def bad_fields(doc: dict[str, Any] | bytes) -> set[str]:
    """The dotted locations (union tag dropped) of every error `doc` raises."""
    with pytest.raises(ValidationError) as info:
        parse_event(doc if isinstance(doc, bytes) else raw(doc))
    return {".".join(str(p) for p in e["loc"][1:]) for e in info.value.errors()}


@pytest.mark.parametrize("kind", list(BASE))
def test_each_type_parses(kind: str) -> None:
    assert parse_event(raw(event(kind))).type == kind


@pytest.mark.parametrize("event_id", ["a", "A-z_0.9:x", "x" * 128])
def test_event_id_accepted(event_id: str) -> None:
    assert parse_event(raw(event(event_id=event_id))).event_id == event_id


@pytest.mark.parametrize("event_id", ["", "x" * 129, "a b", "a/b", "é", "a@b", 12])
def test_event_id_rejected(event_id: object) -> None:
    assert bad_fields(event(event_id=event_id)) == {"event_id"}


@pytest.mark.parametrize("customer_id", ["c", "c@example.com", "a.b_c:d-e", "x" * 128])
def test_customer_id_accepted(customer_id: str) -> None:
    assert parse_event(raw(event(customer_id=customer_id))).customer_id == customer_id


@pytest.mark.parametrize("customer_id", ["", "x" * 129, "c 1", "c#1", "c\u200b1", 1042])
def test_customer_id_rejected(customer_id: object) -> None:
    assert bad_fields(event(customer_id=customer_id)) == {"customer_id"}


@pytest.mark.parametrize("missing", ["event_id", "customer_id", "occurred_at", "data"])
def test_required_fields(missing: str) -> None:
    doc = event()
    del doc[missing]
    assert bad_fields(doc) == {missing}


def test_source_is_optional_and_bounded() -> None:
    assert parse_event(raw(event(source=None))).source is None
    assert parse_event(raw(event(source="s" * 64))).source == "s" * 64
    assert bad_fields(event(source="s" * 65)) == {"source"}


@pytest.mark.parametrize(
    "occurred_at",
    ["2026-11-20T10:15:00", "2026-11-20", "yesterday", "", 1700000000, "1700000000",
     "2026-11-20T10:15:00+0800", "2026-11-20T10:15+08:00", "2026-13-20T10:15:00Z"],
)
def test_occurred_at_needs_rfc3339_with_offset(occurred_at: object) -> None:
    assert bad_fields(event(occurred_at=occurred_at)) == {"occurred_at"}


def test_occurred_at_keeps_offset() -> None:
    parsed = parse_event(raw(event(occurred_at="2026-11-20T10:15:00+08:00")))
    assert parsed.occurred_at == datetime(2026, 11, 20, 2, 15, tzinfo=UTC)


def test_unknown_type_and_missing_type() -> None:
    for doc in (event(type="visit"), event(type=None)):
        with pytest.raises(ValidationError) as info:
            parse_event(raw(doc))
        assert info.value.errors()[0]["type"] in {"union_tag_invalid", "union_tag_not_found"}


def test_unknown_fields_rejected_top_level_and_in_data() -> None:
    assert bad_fields(event(extra=1)) == {"extra"}
    assert bad_fields(with_data("purchase", discount="1")) == {"data.discount"}
    assert bad_fields(with_data("feedback", stars=4)) == {"data.stars"}


@pytest.mark.parametrize(
    ("amount", "expected"),
    [("1299.00", Decimal("1299.00")), ("0.0001", Decimal("0.0001")), (12, Decimal(12)),
     (0.1, Decimal("0.1")), (19.99, Decimal("19.99")), ("1e12", Decimal("1e12")),
     (1_000_000_000_000, Decimal(10) ** 12), (" 5 ", Decimal(5))],
)
def test_amount_accepted_exactly(amount: object, expected: Decimal) -> None:
    parsed = parse_event(raw(with_data("purchase", amount=amount)))
    assert parsed.data.amount == expected  # type: ignore[union-attr]
    assert isinstance(parsed.data.amount, Decimal)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "amount",
    ["0", 0, "-1", -0.5, "0.00001", 0.00001, "1000000000000.0001", 1_000_000_000_001, "1e13",
     "abc", "", True, None, [], {}, "NaN", "Infinity", "-Infinity", 10**30, 1e308],
)
def test_amount_rejected(amount: object) -> None:
    doc = with_data("purchase", amount=amount) if amount is not None else with_data(
        "purchase", amount=None)
    assert bad_fields(doc) == {"data.amount"}


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_amount_nan_and_infinity_literals_rejected(literal: bytes) -> None:
    body = raw(with_data("refund", amount=1)).replace(b'"amount": 1', b'"amount": ' + literal)
    assert bad_fields(body) == {"data.amount"}


@pytest.mark.parametrize("currency", ["cny", "CN", "CNYY", "", 156])
def test_currency_format(currency: object) -> None:
    assert bad_fields(with_data("purchase", currency=currency)) == {"data.currency"}


@pytest.mark.parametrize(
    ("data", "field"),
    [({"quantity": 0}, "data.quantity"), ({"quantity": 1.5}, "data.quantity"),
     ({"quantity": "2"}, "data.quantity"), ({"category": "c" * 65}, "data.category"),
     ({"order_id": ""}, "data.order_id"), ({"currency": None}, "data.currency")],
)
def test_purchase_fields(data: dict[str, Any], field: str) -> None:
    assert bad_fields(with_data("purchase", **data)) == {field}


def test_refund_has_no_category() -> None:
    assert bad_fields(with_data("refund", category="shoes")) == {"data.category"}


@pytest.mark.parametrize(
    ("data", "field"),
    [({"channel": "c" * 33}, "data.channel"), ({"action": ""}, "data.action"),
     ({"channel": None}, "data.channel"), ({"action": 3}, "data.action")],
)
def test_interaction_fields(data: dict[str, Any], field: str) -> None:
    assert bad_fields(with_data("interaction", **data)) == {field}


@pytest.mark.parametrize(
    "data", [{"rating": 1}, {"nps": 0}, {"nps": 10}, {"complaint": False},
             {"rating": None, "complaint": True, "comment": "c" * 2000}],
)
def test_feedback_accepted(data: dict[str, Any]) -> None:
    assert parse_event(raw(with_data("feedback", **data))).type == "feedback"


@pytest.mark.parametrize(
    ("data", "field"),
    [({"rating": 0}, "data.rating"), ({"rating": 6}, "data.rating"),
     ({"rating": 4.5}, "data.rating"), ({"rating": True}, "data.rating"),
     ({"nps": 11}, "data.nps"), ({"nps": -1}, "data.nps"), ({"complaint": "yes"},
     "data.complaint"), ({"complaint": 1, "rating": None}, "data.complaint"),
     ({"comment": "c" * 2001}, "data.comment"), ({"comment": "a\x00b"}, "data.comment")],
)
def test_feedback_fields(data: dict[str, Any], field: str) -> None:
    assert bad_fields(with_data("feedback", **data)) == {field}


def test_feedback_needs_rating_nps_or_complaint() -> None:
    assert bad_fields(with_data("feedback", rating=None, comment="meh")) == {"data"}


def test_parse_event_obj_matches_parse_event() -> None:
    doc = event()
    assert parse_event_obj(doc) == parse_event(raw(doc))


def test_event_json_is_canonical_and_round_trips() -> None:
    parsed = parse_event(raw(with_data("purchase", amount=19.99, order_id=None)))
    out = orjson.loads(event_json(parsed))
    assert out["data"]["amount"] == "19.99"
    assert "order_id" not in out["data"]
    assert parse_event(event_json(parsed)) == parsed


def test_too_far_in_future() -> None:
    now = datetime(2026, 11, 20, tzinfo=UTC)
    at = (now + timedelta(seconds=300)).isoformat()
    parsed = parse_event(raw(event(occurred_at=at)))
    assert not too_far_in_future(parsed, now=now, max_future_seconds=300)
    assert too_far_in_future(parsed, now=now, max_future_seconds=299)


# --- Input edges: the oldest instant, numbers read exactly --------------------------------


@pytest.mark.parametrize("occurred_at", [
    "0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1999-12-31T23:59:59.999999Z",
    "2000-01-01T07:59:59+08:00",  # 1999-12-31T23:59:59Z
    "1999-12-31t23:59:59z",  # an unusual spelling: pydantic's path says the same
])
def test_occurred_at_before_2000_is_refused(occurred_at: str) -> None:
    doc = event(occurred_at=occurred_at)
    with pytest.raises(ValidationError) as info:
        parse_event(raw(doc))
    [error] = info.value.errors()
    assert error["loc"][1:] == ("occurred_at",)
    assert error["msg"] == "Value error, must be on or after 2000-01-01T00:00:00Z"
    with pytest.raises(ValidationError):
        parse_event_obj(doc)


@pytest.mark.parametrize("occurred_at", ["2000-01-01T00:00:00Z", "1999-12-31T20:00:00-04:00"])
def test_occurred_at_from_2000_on_is_accepted(occurred_at: str) -> None:
    assert parse_event(raw(event(occurred_at=occurred_at))).occurred_at == datetime(
        2000, 1, 1, tzinfo=UTC)


def number_amount(literal: str, *, occurred_at: str = "2026-11-20T10:15:00+08:00") -> bytes:
    """A refund whose amount is the JSON number `literal`, written as is."""
    body = raw(event("refund", occurred_at=occurred_at, data={"amount": 1, "currency": "CNY"}))
    return body.replace(b'"amount": 1', b'"amount": ' + literal.encode())


@pytest.mark.parametrize("literal", ["100.000000000000001", "0.10000000000000001", "1.00000",
                                     "1e-5", "99999999999.99999999"])
@pytest.mark.parametrize("occurred_at", ["2026-11-20T10:15:00+08:00", "2026-11-20t02:15:00z"])
def test_json_number_amount_with_too_many_decimals_is_refused(literal: str,
                                                               occurred_at: str) -> None:
    # A binary float would read most of these as a number with few decimals, and accept it.
    body = number_amount(literal, occurred_at=occurred_at)
    with pytest.raises(ValidationError) as info:
        parse_event(body)
    [error] = info.value.errors()
    assert error["loc"][1:] == ("data", "amount")
    assert error["msg"] == "Value error, at most 4 decimal places"


@pytest.mark.parametrize("occurred_at", ["2026-11-20T10:15:00+08:00", "2026-11-20t02:15:00z"])
@pytest.mark.parametrize(("literal", "expected"), [
    ("19.990", "19.990"), ("1299.5", "1299.5"), ("0.0001", "0.0001"), ("1E+3", "1E+3"),
    ("999999999999.9999", "999999999999.9999"),  # a float would make it 1000000000000.0
])
def test_json_number_amount_is_taken_as_written(literal: str, expected: str,
                                                occurred_at: str) -> None:
    parsed = parse_event(number_amount(literal, occurred_at=occurred_at))
    assert parsed.data.amount.as_tuple() == Decimal(expected).as_tuple()  # type: ignore[union-attr]
