"""Admin writes to one customer (overrides, erasure) as records on the events topic.

The API does not change a customer itself: it publishes a control record, keyed by the
customer id like their events, so it lands on the partition whose owner is the single
writer of that customer and is applied there in order with the events around it (an
event published before the erasure is erased; one published after starts a fresh
customer). The record's header marks it; its value is JSON. Controls are deduplicated by
their id like events, under a key no event id can have, and are applied exactly once with
the checkpoint that commits them; the API learns that from the dedupe table.

Anything that can write to the events topic can send a control: the topic's write access
is the trust boundary, as it already is for events (docs/reliability.md).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from hashlib import blake2b
from typing import Literal

import orjson

HEADER = "tierflow-control"
Kind = Literal["override.set", "override.remove", "erase"]
KINDS = ("override.set", "override.remove", "erase")


class ControlInvalid(ValueError):
    """A control record that cannot be read (it goes to the DLQ with the reason)."""


@dataclass(frozen=True, slots=True)
class Control:
    """One admin write: set or remove an override on a ladder, or erase the customer."""

    id: str
    kind: Kind
    customer_id: str
    requested_at: datetime
    ladder: str | None = None
    tier: str | None = None
    reason: str | None = None
    expires_at: datetime | None = None

    @classmethod
    def make(cls, kind: Kind, customer_id: str, *, requested_at: datetime,
             ladder: str | None = None, tier: str | None = None, reason: str | None = None,
             expires_at: datetime | None = None) -> Control:
        """A new control with a fresh id."""
        return cls(str(uuid.uuid4()), kind, customer_id, requested_at, ladder, tier,
                   reason, expires_at)

    @property
    def key_id(self) -> str:
        """What the dedupe table remembers it by: `!` never starts an event id."""
        return f"!{self.id}"

    def value(self) -> bytes:
        """The record's value."""
        doc = {"control": self.kind, "id": self.id, "customer_id": self.customer_id,
               "requested_at": self.requested_at.isoformat()}
        if self.ladder is not None:
            doc["ladder"] = self.ladder
        if self.tier is not None:
            doc["tier"] = self.tier
        if self.reason is not None:
            doc["reason"] = self.reason
        if self.expires_at is not None:
            doc["expires_at"] = self.expires_at.isoformat()
        return orjson.dumps(doc)

    def headers(self) -> list[tuple[str, bytes]]:
        """The record's headers."""
        return [(HEADER, self.kind.encode())]


def is_control(headers: object) -> bool:
    """Whether a consumed record's headers mark it as a control."""
    return bool(headers) and any(name == HEADER for name, _ in headers)  # type: ignore[attr-defined]


def parse(value: bytes | None) -> Control:
    """A control from a record's value; raises ControlInvalid."""
    try:
        doc = orjson.loads(value or b"")
        kind = doc["control"]
        if kind not in KINDS:
            raise ControlInvalid(f"control: unknown kind {kind!r}")
        control = Control(
            str(uuid.UUID(doc["id"])), kind, _text(doc["customer_id"]),
            _moment(doc["requested_at"]), _optional(doc.get("ladder")),
            _optional(doc.get("tier")), _optional(doc.get("reason")),
            _moment(doc["expires_at"]) if doc.get("expires_at") is not None else None,
        )
    except ControlInvalid:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ControlInvalid(f"control: unreadable ({type(exc).__name__}: {exc})") from exc
    if kind.startswith("override.") and control.ladder is None:
        raise ControlInvalid("control: an override needs a ladder")
    if kind == "override.set" and (control.tier is None or control.reason is None):
        raise ControlInvalid("control: setting an override needs a tier and a reason")
    return control


def fingerprint(value: bytes | None) -> int:
    """64 bits of the record's value, as the dedupe table keeps them for events."""
    return int.from_bytes(blake2b(value or b"", digest_size=8).digest(), "big", signed=True)


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ControlInvalid("control: customer_id must be a non-empty string")
    return value


def _optional(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ControlInvalid(f"control: expected a string, got {type(value).__name__}")


def _moment(value: object) -> datetime:
    if not isinstance(value, str):
        raise ControlInvalid("control: times are RFC 3339 strings")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ControlInvalid("control: times need an offset")
    return moment
