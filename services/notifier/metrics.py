"""The notifier's Prometheus metrics, registered on the registry its composition root owns."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.metrics import LATENCY_BUCKETS


@dataclass(frozen=True)
class NotifierMetrics:
    """Relay outcomes, backlog, latency and leadership."""

    messages: Counter
    backlog: Gauge
    relay_seconds: Histogram
    is_leader: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> NotifierMetrics:
        """Register every notifier metric on `registry`."""
        return cls(
            messages=Counter(
                "tierflow_notifier_messages_total",
                "Tier-change messages produced, by kind and outcome (sent, failed).",
                ["kind", "outcome"], registry=registry,
            ),
            backlog=Gauge(
                "tierflow_notifier_outbox_backlog",
                "Tier changes recorded but not yet acknowledged by the broker.",
                registry=registry,
            ),
            relay_seconds=Histogram(
                "tierflow_notifier_relay_seconds",
                "Seconds from a tier change being recorded to the broker acknowledging it.",
                buckets=LATENCY_BUCKETS, registry=registry,
            ),
            is_leader=Gauge(
                "tierflow_notifier_is_leader",
                "1 while this instance holds the relay lock and relays the outbox.",
                registry=registry,
            ),
        )
