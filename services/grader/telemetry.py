"""The grader's Prometheus metrics, on a registry of its own."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from services.grader.grading.customer import TierChange
from services.grader.intake import DLQ_REASONS
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
        self.end_to_end = BulkHistogram(
            "tierflow_grader_end_to_end_seconds",
            "From the event's Kafka timestamp (ingest accepted it) to its effect committed",
            END_TO_END_BUCKETS,
        )
        r.register(self.end_to_end)
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
        self.controls = Counter(
            "tierflow_grader_controls_total",
            "Admin writes applied by the customer's owner, by kind (override.set, "
            "override.remove, erase)", ["kind"], registry=r,
        )
        self.dlq = Counter(
            "tierflow_grader_dlq_total",
            "Records sent to the DLQ, by reason (empty, invalid, future, currency, control, "
            "unreadable, fold)", ["reason"], registry=r,
        )
        for reason in DLQ_REASONS:
            self.dlq.labels(reason)
        self.gc_seconds = Counter(
            "tierflow_grader_gc_seconds_total",
            "Seconds the consumer spent in Python's cyclic garbage collector, by generation "
            "(0, 1, 2)", ["generation"], registry=r,
        )
        self._gc_started = 0.0
        self.evictions = Counter(
            "tierflow_grader_state_evictions_total",
            "Customers dropped from memory to stay within the budget", registry=r,
        )
        self.conflicting_duplicates = Counter(
            "tierflow_grader_conflicting_duplicates_total",
            "Repeats of an applied event_id whose payload differs from the applied one "
            "(ignored like every duplicate: the first one wins)", registry=r,
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

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        """A `gc.callbacks` entry: times each collection."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_seconds.labels(str(info["generation"])).inc(
                time.perf_counter() - self._gc_started)

    def count_changes(self, changes: Iterable[TierChange]) -> None:
        """Count applied tier changes (not downgrade notices), whatever caused them."""
        counts = Tally(
            (tc.change.ladder, tc.change.from_tier or "", tc.change.to_tier, tc.reason)
            for tc in changes if tc.change.kind == "tier.changed")
        for labels, count in counts.items():  # labels() costs ~2.5 µs: once per kind
            self.tier_changes.labels(*labels).inc(count)

    def observe_end_to_end(self, stamps: Sequence[float], now: float) -> None:
        """Delays from Kafka timestamps (seconds) to `now`, the commit."""
        if stamps:
            self.end_to_end.observe_many([max(now - stamp, 0.0) for stamp in stamps])
            self.end_to_end_max.set(self.end_to_end.max)


class BulkHistogram(Collector):
    """A histogram fed a batch at a time: one observation per event, at a few hundred
    nanoseconds each instead of prometheus_client's few microseconds (a checkpoint
    observes tens of thousands)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = list(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: +Inf
        self.total = 0.0
        self.max = 0.0

    def observe_many(self, values: Sequence[float]) -> None:
        """Count every value in its bucket."""
        bounds, counts = self.bounds, self.counts
        for value in values:
            counts[bisect_left(bounds, value)] += 1
        self.total += sum(values)
        self.max = max(self.max, max(values))

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """Cumulative buckets, as Prometheus expects."""
        cumulative, running = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            cumulative.append((bound, running))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], cumulative, sum_value=self.total)
        yield family
