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


@pytest.mark.parametrize("replayed", ["none", "all"])
async def test_empty_broker_after_restart_is_noticed(
    migrated_pg: str, tmp_path: Path, replayed: str
) -> None:
    """`none`: the new broker holds fewer messages than the stored positions, so they
    point past its end. `all`: the old events are sent again after a new one, so every
    partition is at least as long as before and only the broker's identity tells."""
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log")
    bootstrap = broker.start()
    settings = grader_settings(migrated_pg, bootstrap)
    before, after = unique("before"), unique("after")
    # Many customers, so every partition holds old events and has a position to lose.
    old_events = [purchase(f"{before}-{n % 30}", "10.00") for n in range(60)]
    try:
        await ensure_topics(settings)
        await produce(bootstrap, settings.topic_events, old_events)
        async with running(create_app(settings)) as client:
            for n in range(30):
                await eventually(lambda n=n: _orders(client, f"{before}-{n}", 2), timeout=30)
        # Like `tierflow up` started again: a new, empty broker that has all its new
        # messages before the grader comes back.
        broker.stop()
        broker.start()
        await ensure_topics(settings)
        again = old_events if replayed == "all" else old_events[:1]
        await produce(bootstrap, settings.topic_events, [purchase(after, "20.00"), *again])
        app = create_app(settings)
        async with running(app) as client:
            await eventually(lambda: _orders(client, after, 1), timeout=60)
            registry = app.state.grader.metrics.registry
            assert registry.get_sample_value("tierflow_grader_broker_resets_total") >= 1
            # The replayed old events were not applied again.
            for n in range(30):
                await _orders(client, f"{before}-{n}", 2)
    finally:
        broker.stop()
