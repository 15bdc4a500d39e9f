"""Tier changes as the JSON messages subscribers receive (the contract's envelope)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import msgspec

from services.grader.grading.customer import TierChange
from services.grader.grading.metrics import Value

SCHEMA_VERSION = 1


@lru_cache(maxsize=4096)
def utc_iso(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a Z (memoised: a batch repeats a few instants)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Message(msgspec.Struct, omit_defaults=True, gc=False):
    """The contract's envelope of a tier change, in its field order (`effective_at` only on
    a scheduled downgrade); metrics: money as decimal strings, counts as integers."""

    id: str
    type: str
    schema_version: int
    customer_id: str
    ladder: str
    from_tier: str | None
    to_tier: str
    direction: str
    reason: str
    policy_version: int
    changed_at: str
    cause_event_id: str | None
    sequence: int
    actions: tuple[str, ...]
    metrics: dict[str, Value]
    effective_at: str | None = None


def _envelope(tc: TierChange) -> _Message:
    change = tc.change
    return _Message(
        tc.message_id, change.kind, SCHEMA_VERSION, tc.customer_id, change.ladder,
        change.from_tier, change.to_tier, change.direction, tc.reason, tc.policy_version,
        utc_iso(tc.changed_at), tc.cause_event_id, change.sequence, change.actions,
        tc.metrics,
        utc_iso(change.effective_at) if change.effective_at is not None else None,
    )


_encode_json = msgspec.json.Encoder().encode


def message_json(tc: TierChange) -> str:
    """The message of a recorded tier change, as the JSON text stored and sent (encoded
    in C, in one step)."""
    return _encode_json(_envelope(tc)).decode()


ERASED = "customer.erased"


def erasure_message(message_id: str, customer_id: str, erased_at: datetime) -> dict[str, Any]:
    """The notice that a customer was erased: downstream systems delete what they hold
    of them, and a later change of the same id starts again at sequence 1."""
    return {"id": message_id, "type": ERASED, "schema_version": SCHEMA_VERSION,
            "customer_id": customer_id, "erased_at": utc_iso(erased_at)}
