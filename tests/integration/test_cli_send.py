"""`tierflow send`'s sender against the real ingest app and broker: counts, rejects, splitting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from services.cli.demo_data import generate
from services.cli.send import BatchSender, SendReport, batched, read_items, send_all
from services.ingest.app import create_app
from shared.kafka import ensure_topics
from shared.settings import IngestSettings
from tests.support import unique

pytestmark = pytest.mark.integration

KEY = "send-it-key-0123456789"


@asynccontextmanager
async def ingest(broker: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The real ingest app on a fresh topic, behind an in-process client carrying the key."""
    settings = IngestSettings(
        kafka_bootstrap=broker, topic_events=unique("ev"), events_partitions=2,
        topic_tier_changes=unique("tc"), topic_dlq=unique("dlq"),
        api_keys=SecretStr(orjson.dumps({KEY: ["events:write"]}).decode()), **overrides,
    )
    await ensure_topics(settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ingest",
        headers={"Authorization": f"Bearer {KEY}"},
    ) as client:
        yield client


def ndjson(events: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(e) + b"\n" for e in events]


async def test_every_line_gets_an_answer_and_rejects_are_explained(broker: str) -> None:
    events = generate(12, seed=10, now=datetime.now(UTC))
    bad = {**events[0], "event_id": unique("bad"), "data": {"amount": "0", "currency": "CNY"},
           "type": "purchase"}
    lines = [*ndjson(events), b"{oops\n", b"\n", orjson.dumps(bad) + b"\n"]
    report = SendReport()
    batches_done = 0

    def count() -> None:
        nonlocal batches_done
        batches_done += 1

    async with ingest(broker) as client:
        sender = BatchSender(client, "http://ingest", report)
        await send_all(sender, batched(read_items(lines, report), 50), concurrency=3,
                       on_batch=count)
    assert report.accepted == len(events)
    assert report.rejected == 2
    assert batches_done == -(-(len(events) + 1) // 50)
    assert any("not valid JSON" in reason for reason in report.reasons)
    assert any(reason.startswith("data.amount") for reason in report.reasons)


async def test_a_batch_too_large_for_ingest_is_split(broker: str) -> None:
    events = generate(6, seed=11, now=datetime.now(UTC))[:40]
    report = SendReport()
    async with ingest(broker, max_body_bytes=2048) as client:
        sender = BatchSender(client, "http://ingest", report)
        await sender.deliver([(e["event_id"], e) for e in events])
    assert (report.accepted, report.rejected) == (len(events), 0)
