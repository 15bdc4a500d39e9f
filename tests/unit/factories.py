"""Builders of valid events for the pure unit tests (parsed by the real event models)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.grader.grading.aggregates import Aggregates, apply
from services.grader.grading.metrics import Metrics, compute_metrics
from shared.events import Event, parse_event_obj

TODAY = date(2026, 11, 20)
NOON = datetime(2026, 11, 20, 12, tzinfo=UTC)
_ids = itertools.count(1)


def day(days_ago: int) -> date:
    """The UTC date `days_ago` days before TODAY (negative: after it)."""
    return TODAY - timedelta(days=days_ago)


def at(days_ago: int, clock: str = "12:00:00", offset: str = "+00:00") -> str:
    """An RFC 3339 timestamp on the local date `days_ago` days before TODAY."""
    return f"{day(days_ago).isoformat()}T{clock}{offset}"


def _event(kind: str, when: str, data: dict[str, Any], **fields: Any) -> Event:
    customer = fields.pop("customer", "c-1")
    event_id = fields.pop("event_id", None) or f"ev-{next(_ids)}"
    doc = {"event_id": event_id, "type": kind, "customer_id": customer,
           "occurred_at": when, "data": data, **fields}
    return parse_event_obj(doc)


def purchase(amount: str, when: str, *, category: str | None = None, **fields: Any) -> Event:
    """A purchase in CNY; `category` only when given."""
    data: dict[str, Any] = {"amount": amount, "currency": "CNY"}
    if category is not None:
        data["category"] = category
    return _event("purchase", when, data, **fields)


def refund(amount: str, when: str, **fields: Any) -> Event:
    """A refund in CNY."""
    return _event("refund", when, {"amount": amount, "currency": "CNY"}, **fields)


def interaction(when: str, action: str = "visit", channel: str = "web", **fields: Any) -> Event:
    """An interaction on a channel."""
    return _event("interaction", when, {"channel": channel, "action": action}, **fields)


def feedback(
    when: str, *, rating: int | None = None, nps: int | None = None,
    complaint: bool | None = None, **fields: Any,
) -> Event:
    """A feedback event with the answers given (at least one)."""
    answers = {"rating": rating, "nps": nps, "complaint": complaint}
    return _event("feedback", when, {k: v for k, v in answers.items() if v is not None}, **fields)


def fold(events: Iterable[Event], agg: Aggregates | None = None) -> Aggregates:
    """Fold events into (fresh) aggregates."""
    agg = agg if agg is not None else Aggregates()
    for event in events:
        apply(agg, event)
    return agg


def metrics_of(events: Iterable[Event], today: date = TODAY) -> Metrics:
    """The metrics of one customer's events as of `today`."""
    return compute_metrics(fold(events), today)
