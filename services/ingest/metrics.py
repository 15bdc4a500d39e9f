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
            "tierflow_ingest_rejections_total", "Rejected events or requests by reason",
            ["reason"], registry=registry,
        )
        latency = Histogram(
            "tierflow_ingest_request_seconds", "Time to answer an ingest request",
            ["route"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.batch_size = Histogram(
            "tierflow_ingest_batch_size", "Events per batch request",
            buckets=SIZE_BUCKETS, registry=registry,
        )
        types = (*EVENT_TYPES, "unknown")
        self._events = {(t, o): events.labels(t, o) for t in types for o in OUTCOMES}
        self._rejections = {r: rejections.labels(r) for r in REASONS}
        self.latency = {r: latency.labels(r) for r in ROUTES}

    def count_event(self, event_type: str, outcome: str) -> None:
        """Count one event."""
        self._events[event_type, outcome].inc()

    def count_events(self, outcomes: Iterable[tuple[str, str]]) -> None:
        """Count `(type, outcome)` pairs, one `inc` per distinct pair."""
        for (event_type, outcome), n in Tally(outcomes).items():
            self._events[event_type, outcome].inc(n)

    def count_rejections(self, reasons: Iterable[str]) -> None:
        """Count rejection reasons, one `inc` per distinct reason."""
        for reason, n in Tally(reasons).items():
            self._rejections[reason].inc(n)
