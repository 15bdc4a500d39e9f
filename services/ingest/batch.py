"""Splitting a batch body into items and assembling the per-item answer: pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.ingest.metrics import event_type_label
from services.ingest.validation import (
    MalformedJson,
    Rejection,
    Rules,
    decode_json,
    validate_json,
    validate_obj,
)
from shared.errors import TierflowError
from shared.events import Event


class BatchShapeInvalid(TierflowError):
    """A JSON batch that is not `{"events": [...]}`."""


class TooManyEvents(TierflowError):
    """More events than one batch may hold."""


def split_batch(body: bytes, *, ndjson: bool, max_events: int) -> list[object]:
    """The batch's items: raw lines for JSON lines (decoded later, one at a time), else
    decoded objects; raises MalformedJson, BatchShapeInvalid or TooManyEvents."""
    if ndjson:
        items: list[object] = [line for line in body.split(b"\n") if line.strip()]
    else:
        doc = decode_json(body)
        if not isinstance(doc, dict) or doc.keys() != {"events"}:
            raise BatchShapeInvalid('the body must be {"events": [...]}')
        items = doc["events"]
        if not isinstance(items, list):
            raise BatchShapeInvalid("events must be an array")
    if len(items) > max_events:
        raise TooManyEvents(f"a batch holds at most {max_events} events, got {len(items)}")
    return items


def check_item(item: object, *, rules: Rules, latest: datetime) -> Event | Rejection:
    """One batch item, checked by every rule (a raw line is decoded and validated at once)."""
    if isinstance(item, bytes):
        return validate_json(item, rules=rules, latest=latest)
    return validate_obj(item, rules=rules, latest=latest)


def claimed(item: object) -> tuple[str | None, str]:
    """The event_id and type label a rejected item claims, for the answer and metrics."""
    if isinstance(item, bytes):
        try:
            item = decode_json(item)
        except MalformedJson:
            return None, "unknown"
    if not isinstance(item, dict):
        return None, "unknown"
    event_id = item.get("event_id")
    return (event_id if isinstance(event_id, str) else None), event_type_label(item.get("type"))


@dataclass(slots=True)
class Settled:
    """A batch's per-item results plus what the metrics need."""

    results: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[tuple[str, str]] = field(default_factory=list)
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (type, reason)
    counts: dict[str, int] = field(
        default_factory=lambda: {"accepted": 0, "rejected": 0, "unavailable": 0}
    )

    def answer(self) -> dict[str, Any]:
        """The 200 body; `unavailable` appears only when some valid events were not acked."""
        body: dict[str, Any] = {"accepted": self.counts["accepted"],
                                "rejected": self.counts["rejected"]}
        if self.counts["unavailable"]:
            body["unavailable"] = self.counts["unavailable"]
        body["results"] = self.results
        return body


def settle(
    items: Sequence[object], checked: Sequence[Event | Rejection],
    failures: Sequence[BaseException | None],
) -> Settled:
    """Join items, their checks and the publish outcomes of the valid ones (in order)."""
    out = Settled()
    pending = iter(failures)
    for index, (item, check) in enumerate(zip(items, checked, strict=True)):
        if isinstance(check, Rejection):
            event_id, label = claimed(item)
            result: dict[str, Any] = {
                "index": index, "event_id": event_id, "status": "rejected", "errors": check.errors
            }
            out.reasons.append((label, check.reason))
        else:
            failure, label = next(pending), check.type
            result = _valid_result(index, check.event_id, failure)
        status: str = result["status"]
        out.results.append(result)
        out.outcomes.append((label, status))
        out.counts[status] += 1
    return out


def _valid_result(index: int, event_id: str, failure: BaseException | None) -> dict[str, Any]:
    if failure is None:
        return {"index": index, "event_id": event_id, "status": "accepted", "errors": []}
    return {"index": index, "event_id": event_id, "status": "unavailable",
            "errors": [{"field": "(event)", "reason": f"{failure}; retry it"}]}
