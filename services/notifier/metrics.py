"""The notifier's Prometheus metrics, registered on the registry its composition root owns."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.metrics import LATENCY_BUCKETS

# Up to the retry schedule's 24 hours: a delivery may succeed on a late retry.
DELIVERY_BUCKETS = (*LATENCY_BUCKETS, 60.0, 300.0, 1800.0, 7200.0, 21600.0, 86400.0)


@dataclass(frozen=True)
class NotifierMetrics:
    """Relay outcomes, backlog, latency and leadership; webhook deliveries."""

    messages: Counter
    backlog: Gauge
    relay_seconds: Histogram
    is_leader: Gauge
    deliveries: Counter
    attempts: Counter
    latency: Histogram
    backlog_deliveries: Gauge
    oldest_pending: Gauge

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
            deliveries=Counter(
                "tierflow_webhook_deliveries_total",
                "Webhook attempts by how the delivery stands after them: delivered,"
                " retrying (an attempt failed, another is scheduled) or failed (no more).",
                ["subscription", "outcome"], registry=registry,
            ),
            attempts=Counter(
                "tierflow_webhook_attempts_total",
                "Webhook attempts by result: 2xx, 3xx, 4xx, 5xx, timeout, connect, refused,"
                " error.", ["subscription", "result"], registry=registry,
            ),
            latency=Histogram(
                "tierflow_webhook_delivery_seconds",
                "Seconds from a tier change being recorded to a receiver accepting it.",
                buckets=DELIVERY_BUCKETS, registry=registry,
            ),
            backlog_deliveries=Gauge(
                "tierflow_webhook_backlog",
                "Deliveries not yet delivered nor failed, per subscription.",
                ["subscription"], registry=registry,
            ),
            oldest_pending=Gauge(
                "tierflow_webhook_oldest_pending_seconds",
                "Age of the oldest delivery not yet delivered nor failed, per subscription.",
                ["subscription"], registry=registry,
            ),
        )
