"""Tier changes as the JSON messages subscribers receive (the contract's envelope)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from services.grader.grading.customer import TierChange
from services.grader.grading.metrics import metrics_json

SCHEMA_VERSION = 1


@lru_cache(maxsize=4096)
def utc_iso(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a Z (memoised: a batch repeats a few instants)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message(tc: TierChange) -> dict[str, Any]:
    """The message body of a recorded tier change."""
    change = tc.change
    body: dict[str, Any] = {
        "id": tc.message_id, "type": change.kind, "schema_version": SCHEMA_VERSION,
        "customer_id": tc.customer_id, "ladder": change.ladder,
        "from_tier": change.from_tier, "to_tier": change.to_tier,
        "direction": change.direction, "reason": tc.reason, "policy_version": tc.policy_version,
        "changed_at": utc_iso(tc.changed_at), "cause_event_id": tc.cause_event_id,
        "sequence": change.sequence, "actions": list(change.actions),
        "metrics": metrics_json(tc.metrics),
    }
    if change.effective_at is not None:
        body["effective_at"] = utc_iso(change.effective_at)
    return body


ERASED = "customer.erased"


def erasure_message(message_id: str, customer_id: str, erased_at: datetime) -> dict[str, Any]:
    """The notice that a customer was erased: downstream systems delete what they hold
    of them, and a later change of the same id starts again at sequence 1."""
    return {"id": message_id, "type": ERASED, "schema_version": SCHEMA_VERSION,
            "customer_id": customer_id, "erased_at": utc_iso(erased_at)}
