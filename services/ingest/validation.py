"""The ingest rules on top of the event schema: pure, no I/O, no clock of its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgspec
import pydantic_core
from pydantic import ValidationError

from shared.errors import TierflowError
from shared.events import EVENT_TYPES, Event, decode_json_exact, parse_event, parse_event_obj
from shared.http import field_errors

_SKIP = frozenset(EVENT_TYPES)
# A missing or unknown `type` has an empty loc; name the field the client has to fix.
_TAG_ERRORS = frozenset({"union_tag_not_found", "union_tag_invalid"})


class MalformedJson(TierflowError):
    """The body is not JSON."""


@dataclass(frozen=True, slots=True)
class Rules:
    """What ingest enforces beyond the schema."""

    base_currency: str
    max_future_seconds: int

    def latest(self, now: datetime) -> datetime:
        """The latest `occurred_at` accepted at `now`; computed once per request."""
        return now + timedelta(seconds=self.max_future_seconds)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event was refused: a metric reason and the field problems."""

    reason: str
    errors: list[dict[str, str]] = field(default_factory=list)


def schema_errors(exc: ValidationError) -> list[dict[str, str]]:
    """pydantic errors as `{"field", "reason"}`, with the union tag dropped from the path."""
    errors = exc.errors(include_url=False, include_input=False)
    out = field_errors(errors, skip=_SKIP)
    for err, item in zip(errors, out, strict=True):
        if err["type"] in _TAG_ERRORS:
            item["field"] = "type"
            item["reason"] = f"must be one of {', '.join(EVENT_TYPES)}"
    return out


def check_rules(event: Event, *, rules: Rules, latest: datetime) -> Rejection | None:
    """The clock and currency rules for an event that passed the schema."""
    # Same test as shared.events.too_far_in_future, with the limit computed once per batch.
    if event.occurred_at > latest:
        reason = f"must be at most {rules.max_future_seconds} seconds in the future"
        return Rejection("future", [{"field": "occurred_at", "reason": reason}])
    if event.type in ("purchase", "refund") and event.data.currency != rules.base_currency:
        reason = f"must be the base currency {rules.base_currency}"
        return Rejection("currency", [{"field": "data.currency", "reason": reason}])
    return None


def validate_obj(obj: object, *, rules: Rules, latest: datetime) -> Event | Rejection:
    """One event already decoded from JSON, checked by every rule."""
    try:
        event = parse_event_obj(obj)
    except ValidationError as exc:
        return Rejection("validation", schema_errors(exc))
    return check_rules(event, rules=rules, latest=latest) or event


def validate_json(raw: bytes, *, rules: Rules, latest: datetime) -> Event | Rejection:
    """One event from JSON text, decoded and validated in a single pass."""
    try:
        event = parse_event(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if errors and errors[0]["type"] == "json_invalid":
            return Rejection("malformed", [{"field": "(body)", "reason": errors[0]["msg"]}])
        return Rejection("validation", schema_errors(exc))
    return check_rules(event, rules=rules, latest=latest) or event


def decode_json(raw: bytes) -> object:
    """JSON text to Python values, numbers exactly (big integers as int, a fraction or an
    exponent as Decimal, never a float) so the schema judges what was written. NaN and
    Infinity are not JSON: refused with the rest of what is malformed."""
    try:
        return decode_json_exact(raw)
    except msgspec.DecodeError as exc:
        # pydantic's wording, the same as for a single event's body (it names the line and
        # column); msgspec's when pydantic would take it (NaN, Infinity).
        try:
            pydantic_core.from_json(raw, allow_inf_nan=False)
        except ValueError as worded:
            raise MalformedJson(str(worded)) from None
        raise MalformedJson(str(exc)) from None
