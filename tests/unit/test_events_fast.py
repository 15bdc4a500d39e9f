"""The fast (msgspec) path of shared.events against the pydantic rules it stands in for.

The invariant: the fast path never accepts what pydantic rejects, and when both accept they
give the same value, field by field. Plus the NUL rule, field by field, and the Structs.
"""

from __future__ import annotations

import json
import math
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pydantic_core
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from services.ingest.validation import Rejection, Rules, validate_json, validate_obj
from shared.events import (
    EVENT_ADAPTER,
    Event,
    Feedback,
    Interaction,
    Purchase,
    PurchaseData,
    decode_json_exact,
    event_json,
    fast_parse_event,
    fast_parse_event_obj,
    parse_event,
    parse_event_obj,
    slow_parse_event,
    slow_parse_event_obj,
    validate_json_model,
)

PROPERTY = settings(
    derandomize=True, database=None, deadline=None, max_examples=400,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NUL = "must not contain NUL characters"

# --- Documents ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    """A JSON number written exactly as `text` (json.dumps would write repr(float))."""

    text: str


def to_python(value: Any) -> Any:
    """The document as decoded JSON: what ingest hands to parse_event_obj (NaN and Infinity,
    which ingest refuses as not JSON, as the floats a Python caller could pass)."""
    if isinstance(value, Num):
        try:
            return decode_json_exact(value.text)
        except msgspec.DecodeError:
            return pydantic_core.from_json(value.text, allow_inf_nan=True)
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_python(v) for v in value]
    return value


def to_json(value: Any, *, ascii_only: bool) -> str:
    """JSON text of the document, with every `Num` written verbatim."""
    literals: list[str] = []

    def mark(v: Any) -> Any:
        if isinstance(v, Num):
            literals.append(v.text)
            return f"@@num{len(literals) - 1}@@"
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        if isinstance(v, list):
            return [mark(x) for x in v]
        return v

    text = json.dumps(mark(value), ensure_ascii=ascii_only)
    for i, literal in enumerate(literals):
        text = text.replace(f'"@@num{i}@@"', literal, 1)
    return text


ID_CHARS = string.ascii_letters + string.digits + "._:-"
ids = st.text(ID_CHARS, min_size=1, max_size=24)
customer_ids = st.text(ID_CHARS + "@", min_size=1, max_size=24)
plain_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=20,
)
# Everything a JSON string can hold and more: NUL, lone surrogates, controls, astral planes.
weird_chars = st.one_of(
    st.characters(), st.characters(categories=["Cs"]), st.sampled_from("\x00\n\x01\u2028é😀"),
)
weird_text = st.one_of(
    st.text(weird_chars, max_size=12),
    st.builds(lambda n, c: c * n, st.sampled_from([0, 1, 3, 32, 33, 64, 65, 128, 129, 2000, 2001]),
              st.sampled_from("aZ0._-@é")),
)


@st.composite
def canonical_instants(draw: st.DrawFn, *, old: bool = False) -> str:
    """RFC 3339 in the usual spelling: T, Z or ±HH:MM, 0–6 decimals; from 2000-01-02 on
    (valid whatever the offset), or with `old` up to then (around EARLIEST and before)."""
    edge = datetime(2000, 1, 2)  # noqa: DTZ001
    at = draw(st.one_of(
        st.datetimes(min_value=datetime(1, 1, 2), max_value=edge),  # noqa: DTZ001
        st.datetimes(min_value=edge - timedelta(days=2), max_value=edge),
    ) if old else st.datetimes(min_value=edge, max_value=datetime(9999, 12, 30)))  # noqa: DTZ001
    text = (f"{at.year:04d}-{at.month:02d}-{at.day:02d}T"
            f"{at.hour:02d}:{at.minute:02d}:{at.second:02d}")
    decimals = draw(st.integers(0, 6))
    if decimals:
        text += "." + f"{at.microsecond:06d}"[:decimals]
    offset = draw(st.one_of(
        st.sampled_from(["Z", "+00:00", "-00:00", "+08:00", "-05:30", "+05:45", "+23:59"]),
        st.builds(lambda s, h, m: f"{s}{h:02d}:{m:02d}", st.sampled_from("+-"),
                  st.integers(0, 23), st.integers(0, 59)),
    ))
    return text + offset


@st.composite
def odd_instants(draw: st.DrawFn) -> object:
    """Spellings at and beyond the edge of what pydantic takes."""
    base = draw(canonical_instants())
    edits = [
        lambda s: s.replace("T", "t"), lambda s: s.replace("T", " "),
        lambda s: s.replace("T", "_"), lambda s: s.replace("Z", "z"),
        lambda s: s[:19] + ".1234567Z", lambda s: s[:19] + ".Z",
        lambda s: s[:19] + "." + "9" * 12 + "+01:00", lambda s: s[:19], lambda s: s[:10],
        lambda s: s[:19] + "+0800", lambda s: s[:19] + "+24:00", lambda s: s[:19] + "+00:60",
        lambda s: s[:19] + "-23:60", lambda s: s[:19] + "+08:00:00",
        lambda s: s[:11] + "24:00:00Z", lambda s: s[:14] + "60:00Z", lambda s: s[:17] + "60Z",
        lambda s: s[:5] + "02-30" + s[10:], lambda s: s[:5] + "04-31" + s[10:],
        lambda s: "0000" + s[4:], lambda s: "2024-02-29" + s[10:],
        lambda s: "2023-02-29" + s[10:], lambda s: s.replace("1", "١"),
        lambda s: s + "\n", lambda s: " " + s, lambda s: s[:16] + s[19:],
        lambda s: s.replace("-", "/"),
    ]
    odd = draw(st.sampled_from(edits))(base)
    return draw(st.sampled_from([odd, odd, odd, 1_700_000_000, "1700000000", "", None, 1.5]))


@st.composite
def amount_values(draw: st.DrawFn) -> object:
    """Money as a string or a JSON number, 0–6 decimals, tiny to huge, signed, odd spellings."""
    whole = draw(st.one_of(
        st.integers(0, 10**13), st.sampled_from([0, 1, 10**12, 10**12 - 1, 10**12 + 1, 10**30]),
    ))
    sign = draw(st.sampled_from(["", "", "", "-"]))
    decimals = draw(st.integers(0, 6))
    digits = draw(st.text("0123456789", min_size=decimals, max_size=decimals))
    text = f"{sign}{whole}" + (f".{digits}" if decimals else "")
    form = draw(st.sampled_from(["str", "str", "number", "number", "exp", "padded", "other"]))
    if form == "str":
        return text
    if form == "number":
        return Num(text)
    if form == "exp":
        exponent = draw(st.integers(-8, 14))
        literal = f"{sign}{whole % 1000}e{exponent}"
        return draw(st.sampled_from([literal, Num(literal), Num(literal.upper())]))
    if form == "padded":
        return draw(st.sampled_from([f" {text} ", f"{text}\n", f"+{text}", f"{text}_0", "1_000"]))
    return draw(st.sampled_from([
        True, False, None, [], {}, "", "abc", "NaN", "Infinity", "-Infinity", "sNaN",
        math.nan, math.inf, -math.inf, 1e308, 5e-324, 0.1, 19.99, 1e12, 1e12 + 0.5, -0.0,
        Num("NaN"), Num("Infinity"), Num("-Infinity"), Num("1e400"), Num("-0"), Num("19.990"),
        Num("1.00001"), Num("12345678.123456789"), "0.00005", "1e-4", "1E+3",
    ]))


money = st.fixed_dictionaries(
    {"amount": amount_values(), "currency": st.sampled_from(["CNY", "USD", "EUR"])},
    optional={"order_id": ids},
)
DATA = {
    "purchase": st.builds(
        lambda m, extra: {**m, **extra}, money,
        st.fixed_dictionaries({}, optional={
            "category": st.sampled_from(["shoes", "books", "电子产品"]),
            "quantity": st.integers(1, 10**20),
        }),
    ),
    "refund": money,
    "interaction": st.fixed_dictionaries({
        "channel": st.sampled_from(["web", "app", "store", "呼叫中心"]),
        "action": st.sampled_from(["visit", "login", "referral"]),
    }),
    "feedback": st.fixed_dictionaries({}, optional={
        "rating": st.integers(1, 5), "nps": st.integers(0, 10), "complaint": st.booleans(),
        "comment": plain_text,
    }),
}


@st.composite
def valid_docs(draw: st.DrawFn) -> dict[str, Any]:
    """Event documents in the usual spellings: the fast path should take them all."""
    kind = draw(st.sampled_from(list(DATA)))
    doc: dict[str, Any] = {
        "event_id": draw(ids), "type": kind, "customer_id": draw(customer_ids),
        "occurred_at": draw(canonical_instants()), "data": draw(DATA[kind]),
    }
    if draw(st.booleans()):
        doc["source"] = draw(st.one_of(st.none(), plain_text))
    if kind == "feedback" and not doc["data"].keys() & {"rating", "nps", "complaint"}:
        doc["data"]["rating"] = draw(st.integers(1, 5))
    if kind in ("purchase", "refund"):
        units = draw(st.integers(1, 10**12 * 100))
        doc["data"]["amount"] = draw(st.sampled_from(
            [str(Decimal(units) / 100), Num(str(Decimal(units) / 100)), units // 100 or 1]
        ))
    return doc


junk = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1.0, 2.0, 5.0, -1.0]),
    weird_text, amount_values(), odd_instants(), canonical_instants(),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                          max_size=2),
)
small_ints = st.one_of(
    st.integers(-2, 12), st.sampled_from([True, False, 1.0, 5.0, 0.0, 2**63, 10**30, -(10**30)]),
    st.sampled_from([Num("1.0"), Num("1e0"), Num("5E0"), Num("-0"), Num("3"), "2", "5"]),
)
bad_ids = st.one_of(
    st.text(ID_CHARS + "@ /é\n\x00#\u200b٣", max_size=6),
    st.sampled_from(["", "x" * 128, "x" * 129, "abc\n", "\nabc", "a@b", "@", "ｘ",
                     "A" * 127 + "é"]),
    st.integers(),
)
# What a field holds when damaged: mostly something of its own kind, else anything.
NEAR: dict[str, st.SearchStrategy[Any]] = {
    "event_id": bad_ids, "customer_id": bad_ids,
    "occurred_at": st.one_of(odd_instants(), canonical_instants(),
                             canonical_instants(old=True)),
    "type": st.sampled_from(["purchase", "refund", "interaction", "feedback", "Purchase",
                             "visit", "", None, 1, ["purchase"]]),
    "amount": amount_values(),
    "currency": st.sampled_from(["CNY", "cny", "CN", "CNYY", "", "ÀBC", "CN\x00", "CNY\n",
                                 "ＣＮＹ", 156, None]),
    "quantity": small_ints, "rating": small_ints, "nps": small_ints,
    "complaint": st.sampled_from([True, False, 0, 1, 0.0, "true", "false", None]),
    "data": st.one_of(st.none(), st.builds(list), st.builds(dict), st.just("x")),
}
TOP_KEYS = ["event_id", "type", "customer_id", "occurred_at", "source", "data"]
DATA_KEYS = ["amount", "currency", "order_id", "category", "quantity", "channel", "action",
             "rating", "nps", "complaint", "comment"]


@st.composite
def mutated_docs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document, its instant and amount often at or over the edge, then 0–3 random
    damages: wrong values, missing and extra fields."""
    doc = draw(valid_docs())
    if draw(st.booleans()):
        doc["occurred_at"] = draw(NEAR["occurred_at"])
    if "amount" in doc["data"] and draw(st.booleans()):
        doc["data"]["amount"] = draw(amount_values())
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
        where = doc["data"] if draw(st.booleans()) and isinstance(doc.get("data"), dict) else doc
        foreign = DATA_KEYS if where is not doc else TOP_KEYS
        key = draw(st.sampled_from(sorted(where) if where and draw(st.integers(0, 4)) else foreign))
        action = draw(st.sampled_from(["near", "near", "near", "any", "delete", "extra"]))
        if action == "near":
            where[key] = draw(NEAR.get(key, weird_text))
        elif action == "any":
            where[key] = draw(junk)
        elif action == "delete":
            where.pop(key, None)
        else:
            where[draw(st.sampled_from(["extra", "Type", "amount ", "data", "x\x00"]))] = 1
    return doc


# --- The comparison ----------------------------------------------------------------------------


def assert_same(fast: msgspec.Struct, slow: msgspec.Struct) -> None:
    """Equal field by field, down to the Decimal's exponent and the datetime's offset."""
    assert type(fast) is type(slow)
    for name in fast.__struct_fields__:
        a, b = getattr(fast, name), getattr(slow, name)
        if isinstance(a, msgspec.Struct):
            assert_same(a, b)
            continue
        assert type(a) is type(b), name
        assert a == b, name
        if isinstance(a, Decimal):
            assert a.as_tuple() == b.as_tuple(), name
        if isinstance(a, datetime):
            assert a.utcoffset() == b.utcoffset(), name
            assert (a.year, a.month, a.day, a.hour, a.minute, a.second, a.microsecond) == (
                b.year, b.month, b.day, b.hour, b.minute, b.second, b.microsecond), name
            assert type(a.tzinfo) is type(b.tzinfo) is timezone, name
    assert fast == slow


def assert_matches_model(event: msgspec.Struct, model: BaseModel) -> None:
    """The Struct holds what the pydantic model holds, field by field (no conversion between)."""
    assert getattr(event, "type", None) == getattr(model, "type", None)
    assert set(event.__struct_fields__) == set(type(model).model_fields) - {"type"}
    for name in event.__struct_fields__:
        a, b = getattr(event, name), getattr(model, name)
        if isinstance(a, msgspec.Struct):
            assert_matches_model(a, b)
            continue
        assert a == b, name
        assert type(a) is type(b) or isinstance(a, datetime), name
        if isinstance(a, Decimal):
            assert a.as_tuple() == b.as_tuple(), name
        if isinstance(a, datetime):
            assert a.utcoffset() == b.utcoffset(), name
            assert a.replace(tzinfo=None) == b.replace(tzinfo=None), name


def same_errors(got: ValidationError, expected: ValidationError) -> None:
    """The same errors, word for word (a ValueError in `ctx` is only equal to itself, NaN
    in `input` not even to itself; str() shows both)."""
    assert got.errors(include_context=False, include_input=False) == expected.errors(
        include_context=False, include_input=False)
    assert str(got) == str(expected)


def check_json(raw: bytes | str) -> Event | None:
    """The invariant for JSON text; the event when pydantic accepts it."""
    fast = fast_parse_event(raw)
    try:
        reference = validate_json_model(raw)
    except ValidationError as exc:
        assert fast is None, f"fast path accepted what pydantic rejects: {exc}"
        with pytest.raises(ValidationError) as info:
            parse_event(raw)
        same_errors(info.value, exc)
        return None
    slow = slow_parse_event(raw)
    assert_matches_model(slow, reference)
    if fast is not None:
        assert_matches_model(fast, reference)
        assert_same(fast, slow)
    assert_same(parse_event(raw), slow)
    return slow


def check_obj(obj: object) -> Event | None:
    """The invariant for an already decoded object."""
    fast = fast_parse_event_obj(obj)
    try:
        reference = EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        assert fast is None, f"fast path accepted what pydantic rejects: {exc}"
        with pytest.raises(ValidationError) as info:
            parse_event_obj(obj)
        same_errors(info.value, exc)
        return None
    slow = slow_parse_event_obj(obj)
    assert_matches_model(slow, reference)
    if fast is not None:
        assert_matches_model(fast, reference)
        assert_same(fast, slow)
    assert_same(parse_event_obj(obj), slow)
    return slow


def round_trips(event: Event) -> None:
    assert_same(parse_event(event_json(event)), event)


# --- Properties --------------------------------------------------------------------------------


@PROPERTY
@given(doc=mutated_docs(), encoding=st.sampled_from(["ascii", "utf-8", "str"]))
def test_fast_path_never_disagrees_with_pydantic(doc: dict[str, Any], encoding: str) -> None:
    text = to_json(doc, ascii_only=encoding == "ascii")
    raw: bytes | str = text if encoding == "str" else text.encode("utf-8", "surrogatepass")
    from_json = check_json(raw)
    from_obj = check_obj(to_python(doc))
    for event in (from_json, from_obj):
        if event is not None:
            assert_same(parse_event(event_json(event)), event)


@settings(PROPERTY, max_examples=200)
@given(doc=valid_docs())
def test_usual_events_take_the_fast_path(doc: dict[str, Any]) -> None:
    raw = to_json(doc, ascii_only=False).encode()
    fast = fast_parse_event(raw)
    assert fast is not None, doc
    assert_same(fast, slow_parse_event(raw))
    fast_obj = fast_parse_event_obj(to_python(doc))
    assert fast_obj is not None
    assert_same(fast_obj, fast)
    out = event_json(fast)
    again = fast_parse_event(out)
    assert again is not None, out
    assert_same(again, fast)


@settings(PROPERTY, max_examples=150)
@given(doc=valid_docs(), damage=st.lists(st.tuples(st.integers(0, 10**4), st.sampled_from(
    [b"", b" ", b"0", b"9", b".", b"e", b"E", b"-", b"+", b'"', b"\\", b"\x00", b"\x1f", b"\xff",
     b"\xc3", b"\xed\xa0\x80", b"}", b"{", b",", b":", b"u", b"T", b"t", b"Z", b"\n", b"null"],
)), min_size=1, max_size=3))
def test_damaged_json_text_never_disagrees(doc: dict[str, Any],
                                           damage: list[tuple[int, bytes]]) -> None:
    raw = bytearray(to_json(doc, ascii_only=False).encode())
    for where, replacement in damage:
        at = where % (len(raw) + 1)
        raw[at:at + 1] = replacement
    check_json(bytes(raw))


# --- The NUL rule, field by field ---------------------------------------------------------------

BASE: dict[str, dict[str, Any]] = {
    "purchase": {"amount": "12.50", "currency": "CNY", "order_id": "o-1", "category": "shoes",
                 "quantity": 1},
    "interaction": {"channel": "web", "action": "visit"},
    "feedback": {"rating": 4, "comment": "fine"},
}


def doc_with(kind: str, field: str, value: object) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "e-1", "type": kind, "customer_id": "c-1",
        "occurred_at": "2026-11-20T10:15:00+08:00", "source": "pos", "data": dict(BASE[kind]),
    }
    if field.startswith("data."):
        doc["data"][field.removeprefix("data.")] = value
    else:
        doc[field] = value
    return doc


NUL_FIELDS = [
    ("purchase", "source"), ("purchase", "data.currency"), ("purchase", "data.order_id"),
    ("purchase", "data.category"), ("interaction", "data.channel"),
    ("interaction", "data.action"), ("feedback", "data.comment"), ("feedback", "source"),
]


@pytest.mark.parametrize("value", ["\x00", "a\x00", "\x00b", "CN\x00", "a\x00b\x00c"])
@pytest.mark.parametrize(("kind", "field"), NUL_FIELDS)
def test_nul_rejected_in_every_text_field(kind: str, field: str, value: str) -> None:
    doc = doc_with(kind, field, value)
    with pytest.raises(ValidationError) as from_json:
        parse_event(json.dumps(doc).encode())
    with pytest.raises(ValidationError) as from_obj:
        parse_event_obj(doc)
    for info in (from_json, from_obj):
        got = {(".".join(str(p) for p in e["loc"][1:]), e["msg"]) for e in info.value.errors()}
        assert got == {(field, f"Value error, {NUL}")}


@pytest.mark.parametrize("field", ["event_id", "customer_id"])
def test_nul_in_ids_fails_the_pattern(field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_event(json.dumps(doc_with("interaction", field, "a\x00b")).encode())
    assert [(e["loc"][1:], e["type"]) for e in info.value.errors()] == [
        ((field,), "string_pattern_mismatch")]


@pytest.mark.parametrize(("kind", "field"), NUL_FIELDS)
def test_ingest_refuses_nul_with_the_field_named(kind: str, field: str) -> None:
    rules = Rules(base_currency="CNY", max_future_seconds=300)
    latest = rules.latest(datetime(2026, 11, 20, 12, tzinfo=UTC))
    doc = doc_with(kind, field, "x\x00")
    expected = Rejection("validation", [{"field": field, "reason": NUL}])
    assert validate_json(json.dumps(doc).encode(), rules=rules, latest=latest) == expected
    assert validate_obj(doc, rules=rules, latest=latest) == expected


def test_nul_elsewhere_is_still_refused() -> None:
    # A NUL in a string that is too long: the length is what pydantic reports, as before.
    doc = doc_with("interaction", "data.channel", "c" * 40 + "\x00")
    with pytest.raises(ValidationError) as info:
        parse_event_obj(doc)
    assert [e["type"] for e in info.value.errors()] == ["string_too_long"]


# --- Fallback cases: valid, but for pydantic to judge ------------------------------------------


@pytest.mark.parametrize(
    ("occurred_at", "expected"),
    [("2026-11-20t10:15:00z", datetime(2026, 11, 20, 10, 15, tzinfo=UTC)),
     ("2026-11-20 10:15:00+08:00", datetime(2026, 11, 20, 2, 15, tzinfo=UTC)),
     ("2026-11-20T10:15:00.12345678Z", datetime(2026, 11, 20, 10, 15, 0, 123456, tzinfo=UTC))],
)
def test_unusual_spellings_fall_back_and_still_parse(occurred_at: str, expected: datetime) -> None:
    doc = doc_with("interaction", "occurred_at", occurred_at)
    raw = json.dumps(doc).encode()
    assert fast_parse_event(raw) is None
    event = parse_event(raw)
    assert isinstance(event, Interaction)
    assert event.occurred_at == expected
    assert type(event.occurred_at.tzinfo) is timezone
    assert_same(parse_event(event_json(event)), event)


def test_datetime_object_through_the_obj_path() -> None:
    at = datetime(2026, 11, 20, 10, 15, tzinfo=timezone(timedelta(hours=8)))
    doc: dict[str, Any] = {**doc_with("interaction", "source", "pos"), "occurred_at": at}
    event = parse_event_obj(doc)
    assert event.occurred_at == at
    assert event.occurred_at.utcoffset() == timedelta(hours=8)


def test_huge_quantity_is_valid_and_round_trips() -> None:
    raw = json.dumps(doc_with("purchase", "data.quantity", 10**30)).encode()
    event = parse_event(raw)
    assert isinstance(event, Purchase)
    assert event.data.quantity == 10**30
    round_trips(event)


# --- The Structs ---------------------------------------------------------------------------------


def test_structs_are_frozen_hashable_and_tagged() -> None:
    event = parse_event(json.dumps(doc_with("purchase", "source", "pos")).encode())
    assert isinstance(event, Purchase)
    assert event.type == "purchase"
    assert isinstance(event.data, PurchaseData)
    assert event.data.amount == Decimal("12.50")
    with pytest.raises(AttributeError):
        event.source = "other"  # type: ignore[misc]
    assert hash(event) == hash(parse_event_obj(doc_with("purchase", "source", "pos")))


def test_event_json_is_canonical() -> None:
    doc = doc_with("feedback", "source", "pos")
    doc["data"] = {"rating": 4}
    out = event_json(parse_event(json.dumps(doc).encode()))
    assert json.loads(out) == {
        "type": "feedback", "event_id": "e-1", "customer_id": "c-1",
        "occurred_at": "2026-11-20T10:15:00+08:00", "data": {"rating": 4}, "source": "pos",
    }
    event = parse_event(json.dumps(doc_with("purchase", "data.amount", "1e12")).encode())
    assert json.loads(event_json(event))["data"]["amount"] == "1E+12"
    round_trips(event)


def test_feedback_needs_an_answer_on_both_paths() -> None:
    doc = doc_with("feedback", "source", "pos")
    doc["data"] = {"comment": "meh"}
    assert fast_parse_event_obj(doc) is None
    with pytest.raises(ValidationError):
        parse_event_obj(doc)
    doc["data"] = {"complaint": False}
    assert isinstance(fast_parse_event_obj(doc), Feedback)
