"""What ingest's OpenAPI document says about events: the request bodies as JSON Schema, and
the answers. Documentation only: the routes read and check their bodies themselves
(services/ingest/validation.py, by the rules of shared/events.py), which is faster than a
FastAPI body, and build their answers as bytes.

The schemas say what JSON Schema can of those rules (docs/events.md): types, required
fields, lengths, patterns, ranges, no unknown fields, no NUL in text. What it cannot is in
the descriptions: `occurred_at` at most TIERFLOW_MAX_FUTURE_SECONDS ahead, an amount's
decimal places as written.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.events import CUSTOMER_ID_PATTERN, EARLIEST, EVENT_ID_PATTERN, EVENT_TYPES
from shared.http import COMPONENTS, FieldError

NO_NUL = "^[^\\u0000]*$"
DECIMAL = "^[0-9]{1,13}(\\.[0-9]{1,4})?$"
Schema = dict[str, Any]


def text(max_length: int, *, min_length: int = 0, description: str = "") -> Schema:
    """A text field PostgreSQL can store (no NUL)."""
    schema: Schema = {"type": "string", "maxLength": max_length, "pattern": NO_NUL}
    if min_length:
        schema["minLength"] = min_length
    if description:
        schema["description"] = description
    return schema


def obj(properties: Schema, required: list[str], description: str, **extra: Any) -> Schema:
    """An object with exactly these fields (unknown ones are refused)."""
    return {"type": "object", "description": description, "properties": properties,
            "required": required, "additionalProperties": False, **extra}


def money(base_currency: str) -> Schema:
    """The fields a purchase and a refund share."""
    return {
        "amount": {
            "description": "Greater than 0, at most 1e12, at most 4 decimal places as written;"
                           " read exactly (a decimal string is preferred)",
            "oneOf": [
                {"type": "string", "pattern": DECIMAL, "examples": ["1299.00"]},
                {"type": "number", "exclusiveMinimum": 0, "maximum": 1e12},
            ],
        },
        "currency": {"type": "string", "enum": [base_currency],
                     "description": "The base currency (TIERFLOW_BASE_CURRENCY)"},
        "order_id": text(128, min_length=1),
    }


def event_schemas(base_currency: str, max_events: int) -> dict[str, Schema]:
    """The event, its four types and the batch, by name, for the document's components."""
    purchase_data = obj({
        **money(base_currency),
        "category": text(64, description="Feeds distinct_categories"),
        "quantity": {"type": "integer", "minimum": 1},
    }, ["amount", "currency"], "What a purchase holds")
    refund_data = obj(money(base_currency), ["amount", "currency"], "What a refund holds")
    interaction_data = obj({
        "channel": text(32, min_length=1, description="web, app, email, sms, phone, store,"
                        " wechat, or your own"),
        "action": text(32, min_length=1, description="visit, click, open, login,"
                       " support_contact, referral, campaign_response, or your own"),
    }, ["channel", "action"], "What an interaction holds")
    feedback_data = obj({
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "nps": {"type": "integer", "minimum": 0, "maximum": 10},
        "complaint": {"type": "boolean"},
        "comment": text(2000),
    }, [], "What feedback holds: at least one of rating, nps, complaint",
        anyOf=[{"required": ["rating"]}, {"required": ["nps"]}, {"required": ["complaint"]}])
    data = {"purchase": purchase_data, "refund": refund_data,
            "interaction": interaction_data, "feedback": feedback_data}
    schemas = {f"{kind.title()}Event": envelope(kind, data[kind]) for kind in EVENT_TYPES}
    schemas["Event"] = {
        "description": "One event; `type` decides what `data` holds (docs/events.md)",
        "oneOf": [{"$ref": f"{COMPONENTS}{name}"} for name in schemas],
        "discriminator": {"propertyName": "type", "mapping": {
            kind: f"{COMPONENTS}{kind.title()}Event" for kind in EVENT_TYPES}},
    }
    schemas["EventBatch"] = obj({"events": {
        "type": "array", "maxItems": max_events, "items": {"$ref": COMPONENTS + "Event"}}},
        ["events"], "Events sent together; each is judged on its own")
    return schemas


def envelope(kind: str, data: Schema) -> Schema:
    """The fields every event has, with `type` and `data` of one kind."""
    return obj({
        "event_id": {"type": "string", "pattern": EVENT_ID_PATTERN,
                     "description": "The idempotency key: reuse it on every retry"},
        "type": {"type": "string", "const": kind},
        "customer_id": {"type": "string", "pattern": CUSTOMER_ID_PATTERN},
        "occurred_at": {
            "type": "string", "format": "date-time",
            "description": "RFC 3339 with an offset; not before"
                           f" {EARLIEST.isoformat().replace('+00:00', 'Z')}, at most"
                           " TIERFLOW_MAX_FUTURE_SECONDS (300) in the future"},
        "source": text(64, description="Where the event came from"),
        "data": data,
    }, ["event_id", "type", "customer_id", "occurred_at", "data"], f"A {kind} event")


def one_body() -> Schema:
    """`POST /v1/events`: the request body."""
    return {"required": True, "content": {"application/json": {
        "schema": {"$ref": COMPONENTS + "Event"}}}}


def batch_body(max_events: int) -> Schema:
    """`POST /v1/events/batch`: the request body, JSON or JSON lines."""
    # `itemSchema` is how OpenAPI 3.2 (and FastAPI, for its own JSON lines answers) says
    # what each line holds.
    lines = {"schema": {
        "type": "string",
        "description": "JSON lines: one event per line (as for POST /v1/events), at most"
                       f" {max_events}; blank lines are skipped, and a line that is not JSON"
                       " is rejected on its own"},
        "itemSchema": {"$ref": COMPONENTS + "Event"}}
    return {"required": True, "content": {
        "application/json": {"schema": {"$ref": COMPONENTS + "EventBatch"}},
        "application/x-ndjson": lines, "application/jsonl": lines}}


class EventAccepted(BaseModel):
    """`POST /v1/events`: the broker acknowledged the event."""

    event_id: str
    status: Literal["accepted"]


class ItemResult(BaseModel):
    """One item of a batch, in the order sent."""

    index: int = Field(ge=0)
    event_id: str | None = Field(description="What the item claimed, if a string")
    status: Literal["accepted", "rejected", "unavailable"]
    errors: list[FieldError]


class BatchAnswer(BaseModel):
    """`POST /v1/events/batch`: one result per item; `unavailable` only when some valid
    events were not acknowledged (retry those with the same event_id)."""

    accepted: int = Field(ge=0)
    rejected: int = Field(ge=0)
    unavailable: int | None = Field(default=None, ge=1, description="Only when some were")
    results: list[ItemResult]
