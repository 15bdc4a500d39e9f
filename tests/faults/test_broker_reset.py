"""A broker that comes back empty (the embedded one keeps nothing across a restart): its
offsets start again at 0, below the positions stored with the state. The grader must
notice and read the new events, not skip them as already seen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from services.grader.app import create_app
from shared.embedded import EmbeddedBroker
from shared.kafka import ensure_topics
from tests.integration.grader_support import grader_settings, produce, purchase, running
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


async def _orders(client: httpx.AsyncClient, customer: str, expected: int) -> dict[str, Any]:
    answer = await client.get(f"/v1/customers/{customer}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert body["metrics"]["orders_total"] == expected
    return body


async def test_empty_broker_after_restart_is_noticed(migrated_pg: str, tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log")
    bootstrap = broker.start()
    settings = grader_settings(migrated_pg, bootstrap)
    before, after = unique("before"), unique("after")
    # Many customers, so every partition holds old events and has a position to lose.
    old_events = [purchase(f"{before}-{n % 30}", "10.00") for n in range(60)]
    try:
        await ensure_topics(settings)
        await produce(bootstrap, settings.topic_events, old_events)
        app = create_app(settings)
        async with running(app) as client:
            for n in range(30):
                await eventually(lambda n=n: _orders(client, f"{before}-{n}", 2), timeout=30)
            broker.stop()
            broker.start()  # same port, nothing kept
            await ensure_topics(settings)
            # Fewer messages than before: the stored positions are beyond the new end.
            await produce(bootstrap, settings.topic_events,
                          [old_events[0], purchase(after, "20.00")])
            await eventually(lambda: _orders(client, after, 1), timeout=60)
            registry = app.state.grader.metrics.registry
            assert registry.get_sample_value("tierflow_grader_broker_resets_total") >= 1
            # The replayed old event was not applied again.
            await _orders(client, f"{before}-0", 2)
    finally:
        broker.stop()
