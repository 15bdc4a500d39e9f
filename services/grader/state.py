"""Rows ↔ domain: ladder states and tier-change messages as JSON."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

from services.grader.grading.evaluate import Change, LadderState
from services.grader.grading.metrics import Metrics, metrics_json

SCHEMA_VERSION = 1


def states_to_json(states: dict[str, LadderState]) -> dict[str, Any]:
    """The `customers.tiers` column."""
    return {
        name: {
            "tier": s.tier, "since": iso(s.since), "computed": s.computed,
            "pending_since": s.pending_since.isoformat() if s.pending_since else None,
            "seq": s.sequence,
        }
        for name, s in states.items()
    }


def states_from_json(doc: dict[str, Any]) -> dict[str, LadderState]:
    """The inverse of `states_to_json`."""
    return {
        name: LadderState(
            s["tier"], datetime.fromisoformat(s["since"]), s["computed"],
            date.fromisoformat(s["pending_since"]) if s["pending_since"] else None, s["seq"],
        )
        for name, s in doc.items()
    }


@lru_cache(maxsize=4096)
def iso(moment: datetime) -> str:
    """`isoformat()`, memoised: a batch writes the same few instants many times."""
    return moment.isoformat()


@lru_cache(maxsize=4096)
def utc_iso(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_message(
    change: Change, *, customer_id: str, reason: str, policy_version: int, changed_at: datetime,
    cause_event_id: str | None, metrics: Metrics, metric_names: tuple[str, ...],
) -> dict[str, Any]:
    """The tier-change message as subscribers receive it."""
    message: dict[str, Any] = {
        "id": str(uuid.uuid4()), "type": change.kind, "schema_version": SCHEMA_VERSION,
        "customer_id": customer_id, "ladder": change.ladder,
        "from_tier": change.from_tier, "to_tier": change.to_tier,
        "direction": change.direction, "reason": reason, "policy_version": policy_version,
        "changed_at": utc_iso(changed_at), "cause_event_id": cause_event_id,
        "sequence": change.sequence, "actions": list(change.actions),
        "metrics": metrics_json(metrics, metric_names),
    }
    if change.effective_at is not None:
        message["effective_at"] = utc_iso(change.effective_at)
    return message
