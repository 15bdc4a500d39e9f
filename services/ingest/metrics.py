"""Ingest's Prometheus metrics, on a registry the composition root owns."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.events import EVENT_TYPES
from shared.metrics import LATENCY_BUCKETS, SIZE_BUCKETS

OUTCOMES = ("accepted", "rejected", "unavailable")
REASONS = (
    "validation", "future", "currency", "malformed", "too_large", "media_type",
    "too_many_events",
)
ROUTES = ("/v1/events", "/v1/events/batch")
STATUS_CLASSES = ("2xx", "4xx", "5xx")
REQUEST = "request"  # the `type` of a rejection of a whole request (no event was read)


def event_type_label(value: object) -> str:
    """A bounded `type` label: one of the event types, else `unknown` (no free text)."""
    return value if isinstance(value, str) and value in EVENT_TYPES else "unknown"


class IngestMetrics:
    """Counters and histograms; label children are bound once, not per event."""

    def __init__(self, registry: CollectorRegistry) -> None:
        events = Counter(
            "tierflow_ingest_events_total", "Events by type and outcome",
            ["type", "outcome"], registry=registry,
        )
        rejections = Counter(
            "tierflow_ingest_rejections_total",
            "Rejected events by type and reason; whole requests refused have type `request`",
            ["type", "reason"], registry=registry,
        )
        latency = Histogram(
            "tierflow_ingest_request_seconds", "Time to answer an ingest request",
            ["route"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        responses = Counter(
            "tierflow_ingest_responses_total",
            "Answers of the event routes by status class (2xx, 4xx, 5xx); a request the key "
            "check refuses (401, 403) never reaches them", ["route", "status"],
            registry=registry,
        )
        self._responses = {(r, c): responses.labels(r, c) for r in ROUTES
                           for c in STATUS_CLASSES}
        self.batch_size = Histogram(
            "tierflow_ingest_batch_size", "Events per batch request",
            buckets=SIZE_BUCKETS, registry=registry,
        )
        types = (*EVENT_TYPES, "unknown")
        self._events = {(t, o): events.labels(t, o) for t in types for o in OUTCOMES}
        self._rejections = {(t, r): rejections.labels(t, r)
                            for t in (*types, REQUEST) for r in REASONS}
        self.latency = {r: latency.labels(r) for r in ROUTES}

    def count_event(self, event_type: str, outcome: str) -> None:
        """Count one event."""
        self._events[event_type, outcome].inc()

    def count_events(self, outcomes: Iterable[tuple[str, str]]) -> None:
        """Count `(type, outcome)` pairs, one `inc` per distinct pair."""
        for (event_type, outcome), n in Tally(outcomes).items():
            self._events[event_type, outcome].inc(n)

    def count_response(self, route: str, status: int) -> None:
        """Count one answer of an event route by its status class."""
        self._responses[route, "5xx" if status >= 500 else "4xx" if status >= 400
                        else "2xx"].inc()

    def count_rejections(self, rejections: Iterable[tuple[str, str]]) -> None:
        """Count `(type, reason)` pairs (type `request` for a whole request), one `inc` per
        distinct pair."""
        for key, n in Tally(rejections).items():
            self._rejections[key].inc(n)
