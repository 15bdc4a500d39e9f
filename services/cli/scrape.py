"""Reading the services' metrics: how `up` knows it drained and `demo` that all is graded."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

GRADED = "tierflow_grader_events_total"
CONSUMER_LAG = "tierflow_grader_consumer_lag"
OUTBOX_BACKLOG = "tierflow_notifier_outbox_backlog"


def metric_sum(text: str, name: str) -> float | None:
    """The sum of every sample called exactly `name` (all label sets); None when absent."""
    total: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                total = (total or 0.0) + sample.value
    return total


async def scrape(client: httpx.AsyncClient, base_url: str) -> str | None:
    """The /metrics text of a service, or None when it does not answer."""
    try:
        response = await client.get(f"{base_url}/metrics", timeout=5.0)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


async def read_metric(client: httpx.AsyncClient, base_url: str, name: str) -> float | None:
    """One metric's sum from a live service; None when the service or the metric is missing."""
    text = await scrape(client, base_url)
    return None if text is None else metric_sum(text, name)
