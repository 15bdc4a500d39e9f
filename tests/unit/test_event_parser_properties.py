"""Properties of the event parser over inputs test_events_fast.py does not make: JSON of
any shape (not only event documents a few edits away from valid), bytes that are not JSON,
events built as Structs rather than parsed, and amounts against the text they were sent as.

- any input parses to an event or is refused with a ValidationError (ingest: a Rejection
  with errors), never anything else, and the fast path agrees with the slow one
  (`check_json` / `check_obj` of test_events_fast.py, which compare them with pydantic);
- a valid event written by `event_json` parses back to itself, and writing it again gives
  the same bytes;
- an amount keeps its exact decimal text: digits and scale, trailing zeros included.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.ingest.validation import (
    MalformedJson,
    Rejection,
    Rules,
    decode_json,
    validate_json,
    validate_obj,
)
from shared.events import (
    Event,
    Feedback,
    FeedbackData,
    Interaction,
    InteractionData,
    Purchase,
    PurchaseData,
    Refund,
    RefundData,
    event_json,
    parse_event,
    parse_event_obj,
    slow_parse_event,
)
from tests.unit.test_events_fast import (
    DATA_KEYS,
    PROPERTY,
    TOP_KEYS,
    Num,
    amount_values,
    assert_same,
    canonical_instants,
    check_json,
    check_obj,
    to_json,
    to_python,
    weird_text,
)

RULES = Rules(base_currency="CNY", max_future_seconds=300)
# Far enough ahead that no generated instant is refused for being in the future: the
# schema is what is under test here.
LATEST = datetime.max.replace(tzinfo=UTC)

# --- Valid events, built as Structs -----------------------------------------------------------

ID_CHARS = string.ascii_letters + string.digits + "._:-"


def bounded(max_size: int, *, min_size: int = 0) -> st.SearchStrategy[str]:
    """Any Unicode a JSON string carries as UTF-8 (pydantic refuses lone surrogates) but
    NUL, short or exactly at the field's limit."""
    return st.one_of(
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                min_size=min_size, max_size=min(max_size, 8)),
        st.sampled_from("aé😀\u2028 ").map(lambda c: c * max_size),  # at the limit
    )


offsets = st.builds(lambda minutes: timezone(timedelta(minutes=minutes)),
                    st.integers(-(23 * 60 + 59), 23 * 60 + 59))
instants = st.builds(
    lambda at, tz: at.replace(tzinfo=UTC if tz.utcoffset(None) == timedelta(0) else tz),
    st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(9999, 12, 30)),  # noqa: DTZ001
    offsets,
)
amounts = st.builds(lambda units, scale: Decimal(units).scaleb(-scale),
                    st.integers(1, 10**12), st.integers(0, 4))
common = {
    "event_id": st.text(ID_CHARS, min_size=1, max_size=128),
    "customer_id": st.text(ID_CHARS + "@", min_size=1, max_size=128),
    "occurred_at": instants,
    "source": st.one_of(st.none(), bounded(64)),
}
order_ids = st.one_of(st.none(), bounded(128, min_size=1))
currencies = st.text(string.ascii_uppercase, min_size=3, max_size=3)
structs = st.one_of(
    st.builds(Purchase, data=st.builds(
        PurchaseData, amount=amounts, currency=currencies, order_id=order_ids,
        category=st.one_of(st.none(), bounded(64)),
        quantity=st.one_of(st.none(), st.integers(1, 10**30))), **common),
    st.builds(Refund, data=st.builds(RefundData, amount=amounts, currency=currencies,
                                     order_id=order_ids), **common),
    st.builds(Interaction, data=st.builds(InteractionData, channel=bounded(32, min_size=1),
                                          action=bounded(32, min_size=1)), **common),
    st.builds(Feedback, data=st.builds(
        FeedbackData, rating=st.integers(1, 5), nps=st.one_of(st.none(), st.integers(0, 10)),
        complaint=st.one_of(st.none(), st.booleans()),
        comment=st.one_of(st.none(), bounded(2000))), **common),
)


# --- JSON of any shape ------------------------------------------------------------------------

numbers = st.one_of(
    st.integers(), st.integers(-(10**40), 10**40),
    st.sampled_from([Num("0.5"), Num("-0"), Num("1e400"), Num("-1E-400"), Num("12.50"),
                     Num("1e3"), Num("0.00001"), Num("123456789012.3456")]),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: Num(repr(f))),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, weird_text, canonical_instants())
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def event_shaped(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event's document, its amount often spelled otherwise, then 0-3 fields (known
    or not, at the top or in `data`) given a value of any shape, or removed."""
    doc: dict[str, Any] = orjson.loads(event_json(draw(structs)))
    if "amount" in doc["data"] and draw(st.booleans()):
        doc["data"]["amount"] = draw(amount_values())  # at and over the edges, any spelling
    for _ in range(draw(st.sampled_from([0, 1, 1, 2, 3]))):
        in_data = isinstance(doc.get("data"), dict) and draw(st.booleans())
        where, known = (doc["data"], DATA_KEYS) if in_data else (doc, TOP_KEYS)
        key = draw(st.sampled_from(sorted({*where, *known, "extra"})))
        if draw(st.integers(0, 3)):
            where[key] = draw(st.one_of(json_values, amount_values()) if key == "amount"
                              else json_values)
        else:
            where.pop(key, None)
    return doc


documents = st.one_of(json_values, event_shaped())


def assert_refused_or_event(raw: bytes) -> None:
    """parse_event gives an event or a ValidationError, nothing else; so does ingest."""
    try:
        parse_event(raw)
    except ValidationError as exc:
        assert exc.errors(), raw
    except Exception as exc:  # the property: nothing else escapes
        raise AssertionError(f"{type(exc).__name__} escaped the parser for {raw!r}") from exc
    answer = validate_json(raw, rules=RULES, latest=LATEST)
    if isinstance(answer, Rejection):
        assert answer.errors, raw
        assert all(e["field"] and e["reason"] for e in answer.errors), answer


@PROPERTY
@given(doc=documents, ascii_only=st.booleans())
def test_any_json_document_is_an_event_or_refused(doc: Any, ascii_only: bool) -> None:
    raw = to_json(doc, ascii_only=ascii_only).encode("utf-8", "surrogatepass")
    assert_refused_or_event(raw)
    event = check_json(raw)  # the fast path agrees with the slow one
    try:
        obj = decode_json(raw)  # what ingest does with a batch, before each event
    except MalformedJson:
        return  # e.g. a lone surrogate: ingest answers 400 for the body
    obj_event = check_obj(obj)
    if event is not None and obj_event is not None:
        assert_same(obj_event, event)
    answer = validate_obj(obj, rules=RULES, latest=LATEST)
    if isinstance(answer, Rejection):
        assert answer.errors, answer
    check_obj(to_python(doc))  # as a Python caller would pass it: floats, not Decimals


@settings(PROPERTY, max_examples=200)
@given(raw=st.one_of(st.binary(max_size=64), st.text(max_size=64).map(
    lambda t: t.encode("utf-8", "surrogatepass"))))
def test_bytes_that_are_not_json_are_refused(raw: bytes) -> None:
    assert_refused_or_event(raw)
    check_json(raw)


# --- Events built as Structs round-trip -------------------------------------------------------


@PROPERTY
@given(event=structs)
def test_a_valid_event_round_trips_through_event_json(event: Event) -> None:
    out = event_json(event)
    again = parse_event(out)
    assert_same(again, event)
    assert_same(slow_parse_event(out), event)
    assert_same(parse_event_obj(orjson.loads(out)), event)
    assert event_json(again) == out  # one spelling: writing it again changes nothing


# --- Amounts keep their text ------------------------------------------------------------------


@st.composite
def amount_texts(draw: st.DrawFn) -> tuple[str, str]:
    """A valid amount as written (string or JSON number, maybe leading zeros or an exponent)
    and its canonical text (what `str(Decimal)` writes and event_json puts on the topic)."""
    value = draw(amounts)
    plain = str(value)
    form = draw(st.sampled_from(["string", "number", "zeros", "exponent"]))
    if form == "string":
        return f'"{plain}"', plain
    if form == "number":
        return plain, plain
    if form == "zeros":  # only a string may have them; the value and scale are kept
        return f'"00{plain}"', plain
    digits = "".join(map(str, value.as_tuple().digits))
    exponent = int(value.as_tuple().exponent)
    if exponent == 0 and digits.endswith("0") and draw(st.booleans()):
        stripped = digits.rstrip("0")  # 1200 as 12e2: the scale is the exponent's
        literal = f"{stripped}E{len(digits) - len(stripped)}"
    else:
        shift = draw(st.integers(0, 4 + exponent))  # more zeros, at most 4 decimals
        literal = f"{digits}{'0' * shift}e{exponent - shift}"
    return literal, str(Decimal(literal))


@PROPERTY
@given(amount=amount_texts(), kind=st.sampled_from(["purchase", "refund"]))
def test_amounts_keep_their_exact_decimal_text(amount: tuple[str, str], kind: str) -> None:
    written, canonical = amount
    raw = (f'{{"event_id":"e-1","type":"{kind}","customer_id":"c-1",'
           f'"occurred_at":"2026-11-20T10:15:00+08:00",'
           f'"data":{{"amount":{written},"currency":"CNY"}}}}').encode()
    expected = Decimal(msgspec.json.decode(written) if written.startswith('"') else written)
    decoded = decode_json(raw)
    for event in (parse_event(raw), slow_parse_event(raw), parse_event_obj(decoded)):
        amount_read = event.data.amount  # type: ignore[union-attr]
        assert amount_read.as_tuple() == expected.as_tuple(), written
        assert str(amount_read) == canonical
        out = event_json(event)
        assert orjson.loads(out)["data"]["amount"] == canonical
        assert parse_event(out).data.amount.as_tuple() == expected.as_tuple()  # type: ignore[union-attr]
