"""The grader's Prometheus metrics, on a registry of its own."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.metrics import LATENCY_BUCKETS, SIZE_BUCKETS


class GraderMetrics:
    """Counters and histograms of consumption, grading and re-grading."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "tierflow_grader_events_total",
            "Events consumed, by outcome (applied, duplicate, dlq)", ["outcome"], registry=r,
        )
        self.batch_size = Histogram(
            "tierflow_grader_batch_size", "Events per consumed batch", buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "tierflow_grader_batch_seconds", "Time to grade and commit one batch",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.end_to_end = Histogram(
            "tierflow_grader_end_to_end_seconds",
            "From the event's Kafka timestamp (ingest accepted it) to its effect committed",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.lag = Gauge(
            "tierflow_grader_consumer_lag", "High watermark minus position, per partition",
            ["partition"], registry=r,
        )
        self.tier_changes = Counter(
            "tierflow_grader_tier_changes_total", "Applied tier changes",
            ["ladder", "from_tier", "to_tier", "reason"], registry=r,
        )
        self.customers = Gauge(
            "tierflow_customers", "Customers per ladder and tier", ["ladder", "tier"], registry=r,
        )
        self.regraded = Counter(
            "tierflow_grader_regraded_total", "Customers re-graded without a new event, by reason",
            ["reason"], registry=r,
        )
        self.broker_resets = Counter(
            "tierflow_grader_broker_resets_total",
            "Partitions whose stored position was beyond the broker's end (broker lost data)",
            registry=r,
        )
        self.fenced = Counter(
            "tierflow_grader_fenced_batches_total",
            "Batches rolled back because another consumer had advanced the partition",
            registry=r,
        )

    def count_changes(self, payloads: Iterable[dict[str, Any]]) -> None:
        """Count applied tier changes (not downgrade notices), whatever caused them."""
        for p in payloads:
            if p["type"] == "tier.changed":
                self.tier_changes.labels(
                    p["ladder"], p["from_tier"] or "", p["to_tier"], p["reason"]
                ).inc()
