"""Outbox rows to Kafka records, and the arithmetic of the relay (pure: no I/O, no async)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import orjson

from services.notifier.webhooks.filters import Change

MESSAGE_ID_HEADER = "tierflow-message-id"
TYPE_HEADER = "tierflow-type"

BACKOFF_FIRST_S = 0.1
BACKOFF_CAP_S = 5.0


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One unsent `tier_changes` row; `payload` is the complete message as JSON text."""

    id: int
    message_id: UUID
    customer_id: str
    ladder: str
    sequence: int
    kind: str
    payload: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Record:
    """What goes onto the tier-changes topic for one row."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def to_record(row: OutboxRow) -> Record:
    """Key by customer (per-customer order), value the stored message, ids in headers."""
    return Record(key=row.customer_id.encode(), value=message_bytes(row.payload), headers=[
        (MESSAGE_ID_HEADER, str(row.message_id).encode()),
        (TYPE_HEADER, row.kind.encode()),
    ])


def message_bytes(payload: str) -> bytes:
    """The stored message exactly as PostgreSQL renders the jsonb: valid JSON, digits intact."""
    # Not re-serialised: orjson reads integers past 64 bits and decimals as floats, and would
    # quietly change them (or refuse them, leaving a row that blocks the outbox behind it).
    return payload.encode()


def change_of(row: OutboxRow) -> Change:
    """What a subscription's filter looks at (the tier and direction are read from the
    message; nothing is re-serialised)."""
    message = orjson.loads(row.payload)
    return Change(
        id=row.id, customer_id=row.customer_id, kind=row.kind, ladder=row.ladder,
        to_tier=message.get("to_tier"), direction=message.get("direction", ""),
    )


def backoff_delay(failures: int) -> float:
    """Seconds to wait after `failures` consecutive failed cycles (exponential, capped)."""
    if failures <= 0:
        return 0.0
    return min(BACKOFF_FIRST_S * 2.0 ** min(failures - 1, 16), BACKOFF_CAP_S)


def relay_seconds(created_at: datetime, acked_at: datetime) -> float:
    """Delay from the change being recorded to the broker acknowledging it (never negative)."""
    return max((acked_at - created_at).total_seconds(), 0.0)
