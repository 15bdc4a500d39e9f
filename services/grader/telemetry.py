"""The grader's Prometheus metrics, on a registry of its own."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.grader.grading.customer import TierChange
from shared.metrics import LATENCY_BUCKETS, SIZE_BUCKETS

# 5 ms to 30 s, fine where the latency target sits (tens of milliseconds).
END_TO_END_BUCKETS = (
    0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0,
    2.0, 5.0, 10.0, 30.0,
)


class GraderMetrics:
    """Counters and histograms of consumption, grading and re-grading."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._max = 0.0
        r = self.registry
        self.events = Counter(
            "tierflow_grader_events_total",
            "Events consumed, by outcome (applied, duplicate, dlq, rerouted)", ["outcome"],
            registry=r,
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
            buckets=END_TO_END_BUCKETS, registry=r,
        )
        self.end_to_end_max = Gauge(
            "tierflow_grader_end_to_end_max_seconds",
            "The largest end-to-end delay seen by this process", registry=r,
        )
        self.progress_age = Gauge(
            "tierflow_grader_stalled_seconds",
            "Seconds since the last commit while events wait (0 when caught up): a consumer "
            "that stops advancing shows here and in /readyz", registry=r,
        )
        self.state_customers = Gauge(
            "tierflow_grader_state_customers", "Customers held in memory by this consumer",
            registry=r,
        )
        self.state_bytes = Gauge(
            "tierflow_grader_state_bytes",
            "Estimated bytes of customer state held in memory (bounded by the budget)",
            registry=r,
        )
        self.state_loads = Counter(
            "tierflow_grader_state_loads_total",
            "Customers brought into memory, by source (stored, new)", ["source"], registry=r,
        )
        self.evictions = Counter(
            "tierflow_grader_state_evictions_total",
            "Customers dropped from memory to stay within the budget", registry=r,
        )
        self.dedupe_pruned = Counter(
            "tierflow_grader_dedupe_pruned_total",
            "Event ids forgotten because they left the dedupe window", registry=r,
        )
        self.lag = Gauge(
            "tierflow_grader_consumer_lag",
            "High watermark minus position, per partition held by this consumer",
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

    def count_changes(self, changes: Iterable[TierChange]) -> None:
        """Count applied tier changes (not downgrade notices), whatever caused them."""
        for tc in changes:
            change = tc.change
            if change.kind == "tier.changed":
                self.tier_changes.labels(
                    change.ladder, change.from_tier or "", change.to_tier, tc.reason
                ).inc()

    def observe_end_to_end(self, stamps: Sequence[float], now: float) -> None:
        """Delays from Kafka timestamps (seconds) to `now`, the commit."""
        if not stamps:
            return
        observe = self.end_to_end.observe
        for stamp in stamps:
            observe(max(now - stamp, 0.0))
        worst = now - min(stamps)
        if worst > self._max:
            self._max = worst
            self.end_to_end_max.set(worst)
