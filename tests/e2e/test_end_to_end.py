"""The three processes as subprocesses on the real broker and PostgreSQL: events posted
over HTTP come out as tiers in a lookup and as tier-change messages on the topic."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from shared.embedded import free_port
from tests.processes import Service
from tests.support import SESSION_TIMEOUT_MS, eventually, unique

pytestmark = pytest.mark.e2e

KEY = "e2e-admin-key-00000001"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def system(migrated_pg: str, broker: str, tmp_path: Path) -> Iterator[dict[str, Service]]:
    """ingest, grader and notifier sharing this test's own topics."""
    env = {
        "TIERFLOW_DATABASE_URL": migrated_pg, "TIERFLOW_KAFKA_BOOTSTRAP": broker,
        "TIERFLOW_TOPIC_EVENTS": unique("events"), "TIERFLOW_TOPIC_DLQ": unique("dlq"),
        "TIERFLOW_TOPIC_TIER_CHANGES": unique("changes"), "TIERFLOW_EVENTS_PARTITIONS": "3",
        "TIERFLOW_CONSUMER_GROUP": unique("grader"),
        "TIERFLOW_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "TIERFLOW_API_KEYS": json.dumps({KEY: ["admin"]}),
    }
    services = {}
    for name in ("ingest", "grader", "notifier"):
        port = free_port()
        service_env = {**env, f"TIERFLOW_{name.upper()}_PORT": str(port)}
        services[name] = Service(name, service_env, port=port, log_dir=tmp_path)
    for service in services.values():
        service.start()
    try:
        yield services
    finally:
        for name in ("ingest", "grader", "notifier"):
            services[name].stop()


def _event(customer: str, kind: str, data: dict[str, Any], days_ago: int = 0) -> dict[str, Any]:
    when = datetime.now(UTC) - timedelta(days=days_ago)
    return {"event_id": unique("e2e"), "type": kind, "customer_id": customer,
            "occurred_at": when.isoformat(), "source": "pos", "data": data}


async def test_events_in_tiers_and_changes_out(system: dict[str, Service], broker: str) -> None:
    for service in system.values():
        await service.ready(timeout=60)
    vip, fan = unique("vip"), unique("fan")
    events = [_event(vip, "purchase", {"amount": "4500.00", "currency": "CNY",
                                       "category": f"c{n % 3}"}, days_ago=n * 7)
              for n in range(12)]
    events.append(_event(fan, "feedback", {"nps": 10, "rating": 5}))
    async with httpx.AsyncClient(headers=AUTH, timeout=10) as client:
        single = await client.post(f"{system['ingest'].url}/v1/events", json=events[0])
        assert single.status_code == 202, single.text
        batch = await client.post(f"{system['ingest'].url}/v1/events/batch",
                                  json={"events": events[1:]})
        assert batch.status_code == 200, batch.text
        assert batch.json()["accepted"] == len(events) - 1

        async def graded() -> dict[str, Any]:
            answer = await client.get(f"{system['grader'].url}/v1/customers/{vip}")
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            assert body["metrics"]["orders_total"] == 12
            return body

        body = await eventually(graded, timeout=60)
        assert body["metrics"]["spend_365d"] == "54000.00"
        assert body["tiers"]["tier"]["tier"] == "vip"
        fan_body = (await client.get(f"{system['grader'].url}/v1/customers/{fan}")).json()
        assert fan_body["tiers"]["nps"]["tier"] == "promoter"
    messages = await _changes(broker, system["notifier"].env["TIERFLOW_TOPIC_TIER_CHANGES"],
                              vip, wanted=4)
    by_ladder: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        by_ladder.setdefault(message["ladder"], []).append(message)
    for ladder, stream in by_ladder.items():
        assert [m["sequence"] for m in stream] == list(range(1, len(stream) + 1)), ladder
        assert stream[0]["direction"] == "initial"
        assert stream[0]["from_tier"] is None
    assert by_ladder["tier"][-1]["to_tier"] == "vip"
    assert by_ladder["tier"][-1]["actions"] == ["assign_account_manager", "exclusive_offer"]
    assert by_ladder["tier"][-1]["type"] == "tier.changed"


async def _changes(broker: str, topic: str, customer: str, *, wanted: int) -> list[dict[str, Any]]:
    """This customer's messages on the tier-changes topic, in arrival order."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        async def arrived() -> None:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                for record in batch:
                    if record.key == customer.encode():
                        found.append(orjson.loads(record.value))
            ladders = {m["ladder"] for m in found}
            assert len(ladders) >= wanted, found

        await eventually(arrived, timeout=60)
    finally:
        await consumer.stop()
    return found


ROOT = Path(__file__).resolve().parents[2]
REFERENCED = re.compile(r"\btierflow_[a-z0-9_]+")
TYPED = re.compile(r"^# TYPE (tierflow_[a-z0-9_]+) (\w+)$", re.MULTILINE)


def exposed(text: str) -> set[str]:
    """Every tierflow series name a /metrics page can carry, from its TYPE lines (a family
    with no labelled child yet still has them)."""
    names = set()
    for name, kind in TYPED.findall(text):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


async def test_every_metric_the_dashboard_and_the_alerts_use_is_exposed(
        system: dict[str, Service]) -> None:
    """The Grafana dashboard and the alert rules in deploy/ against the live processes'
    /metrics (not against the source: a metric defined but never registered fails here)."""
    for service in system.values():
        await service.ready(timeout=60)
    async with httpx.AsyncClient(timeout=10) as client:
        pages = {name: (await client.get(f"{s.url}/metrics")).text
                 for name, s in system.items()}
    live = set().union(*(exposed(text) for text in pages.values()))
    dashboard = (ROOT / "deploy/grafana/dashboards/tierflow.json").read_text(encoding="utf-8")
    alerts = (ROOT / "deploy/prometheus/alerts.yml").read_text(encoding="utf-8")
    for source, text in (("dashboard", dashboard), ("alerts", alerts)):
        used = set(REFERENCED.findall(text))
        assert used, source
        assert sorted(used - live) == [], f"{source} uses metrics no process exposes"
    # Every label value set is bounded: no customer or event id ever becomes a label.
    for text in pages.values():
        assert not re.search(r'(customer|event)(_id)?="', text)
