"""The notifier app as `create_app` wires it: health routes, metrics, the relay in the lifespan."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest
from aiokafka.admin import NewTopic
from pydantic import SecretStr
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.app import create_app
from shared.db.tables import tier_changes
from shared.embedded import free_port
from shared.kafka import ensure_topics
from shared.settings import NotifierSettings
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


def one_change(customer: str) -> dict[str, object]:
    message_id = uuid.uuid4()
    payload = {"id": str(message_id), "type": "tier.changed", "schema_version": 1,
               "customer_id": customer, "ladder": "tier", "sequence": 1, "to_tier": "vip"}
    return {"message_id": message_id, "customer_id": customer, "ladder": "tier",
            "sequence": 1, "kind": "tier.changed", "payload": payload}


async def test_app_serves_health_and_relays_on_notify(
    engine: AsyncEngine, migrated_pg: str, broker: str
) -> None:
    topic = unique("tier-changes")
    # A minute's idle poll: only NOTIFY can make the relay pick the row up within the test.
    settings = NotifierSettings(
        database_url=SecretStr(migrated_pg), kafka_bootstrap=broker, topic_tier_changes=topic,
        relay_idle_ms=60_000,
    )
    await ensure_topics(settings, [NewTopic(topic, 2, 1)])
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=transport, base_url="http://notifier"
    ) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert orjson.loads(ready.content)["checks"] == {
            "database": True, "broker": True, "relay": True
        }

        async def leading_and_idle() -> None:
            body = (await client.get("/metrics")).text
            assert "tierflow_notifier_is_leader 1.0" in body
            assert "tierflow_notifier_outbox_backlog 0.0" in body

        await eventually(leading_and_idle)
        row = one_change(unique("c"))
        async with engine.begin() as conn:
            await conn.execute(insert(tier_changes), [row])
            await conn.execute(text("NOTIFY tierflow_outbox"))

        async def sent() -> None:
            query = select(tier_changes.c.sent_at).where(
                tier_changes.c.message_id == row["message_id"]
            )
            async with engine.connect() as conn:
                assert (await conn.execute(query)).scalar_one() is not None

        await eventually(sent)
        body = (await client.get("/metrics")).text
        assert 'tierflow_notifier_messages_total{kind="tier.changed",outcome="sent"}' in body
        assert "tierflow_notifier_relay_seconds_count" in body


async def test_readyz_is_503_when_the_broker_is_unreachable(migrated_pg: str) -> None:
    settings = NotifierSettings(
        database_url=SecretStr(migrated_pg), kafka_bootstrap=f"127.0.0.1:{free_port()}"
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://notifier"
    ) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    checks = orjson.loads(ready.content)["checks"]
    assert checks["broker"] is False
    assert checks["database"] is True
