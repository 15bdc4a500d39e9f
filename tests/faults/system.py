"""The fault scenarios' rig: the three services as real processes on their own PostgreSQL
and broker, steady load through ingest that retries what was not acknowledged with the
same event ids, and the offline verifier that checks the promise from the outside."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.embedded import free_port
from tests.faults.history import differing_customers
from tests.processes import Service
from tests.support import SESSION_TIMEOUT_MS, applied_events, eventually, unique

KEY = "fault-suite-admin-key-0001"
AUTH = {"Authorization": f"Bearer {KEY}"}
PARTITIONS = 3


def pause(pids: list[int]) -> None:
    """SIGSTOP: the processes hold their sockets and answer nothing."""
    for pid in pids:
        psutil.Process(pid).suspend()


def resume(pids: list[int]) -> None:
    for pid in pids:
        psutil.Process(pid).resume()


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (a postmaster and its backends)."""
    root = psutil.Process(pid)
    return [root.pid, *(child.pid for child in root.children(recursive=True))]


@dataclass
class Report:
    """One scenario's figures, for the reliability table."""

    scenario: str
    accepted: int = 0
    lost: int = 0
    doubled: int = 0
    changes: int = 0
    changes_missing: int = 0
    recovery_s: float = 0.0
    retried: int = 0  # requests the client had to send again (503, reset, unacknowledged)

    def line(self) -> str:
        return (f"{self.scenario}: accepted {self.accepted:,}, lost {self.lost}, doubled "
                f"{self.doubled}, tier changes {self.changes:,} (missing on the topic "
                f"{self.changes_missing}), recovered in {self.recovery_s:.1f}s")


class System:
    """ingest, `graders` grader processes and a notifier, on this scenario's own topics."""

    def __init__(self, pg_url: str, bootstrap: str, log_dir: Path, *, graders: int = 1) -> None:
        self.prefix = unique("fault")
        self.topic_events = f"{self.prefix}-events"
        self.topic_changes = f"{self.prefix}-changes"
        env = {
            "TIERFLOW_DATABASE_URL": pg_url, "TIERFLOW_KAFKA_BOOTSTRAP": bootstrap,
            "TIERFLOW_TOPIC_EVENTS": self.topic_events,
            "TIERFLOW_TOPIC_TIER_CHANGES": self.topic_changes,
            "TIERFLOW_TOPIC_DLQ": f"{self.prefix}-dlq",
            "TIERFLOW_EVENTS_PARTITIONS": str(PARTITIONS),
            "TIERFLOW_CONSUMER_GROUP": f"{self.prefix}-grader",
            "TIERFLOW_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            "TIERFLOW_API_KEYS": json.dumps({KEY: ["admin"]}),
            "TIERFLOW_RELAY_IDLE_MS": "50",
            # Short, so that a paused broker turns into 503s the client must retry.
            "TIERFLOW_PRODUCE_TIMEOUT_S": "2",
        }
        self.services: dict[str, Service] = {}
        names = ["ingest", *[f"grader-{i}" for i in range(1, graders + 1)], "notifier"]
        for name in names:
            module = name.split("-")[0]
            port = free_port()
            service = Service(module, {**env, f"TIERFLOW_{module.upper()}_PORT": str(port)},
                              port=port, log_dir=log_dir)
            service.log_path = log_dir / f"{name}.log"
            self.services[name] = service

    @property
    def ingest(self) -> Service:
        return self.services["ingest"]

    async def start(self) -> None:
        for service in self.services.values():
            service.start()
        for service in self.services.values():
            await service.ready(timeout=60)

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{s.log_tail(15)}" for name, s in self.services.items())


@dataclass
class Load:
    """Events posted in batches at a steady pace; whatever was not acknowledged is sent
    again with the same event ids until it is (a retry is always safe)."""

    system: System
    customers: int = 200
    per_second: int = 400
    batch: int = 40
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: int = 0
    _rng: random.Random = field(default_factory=lambda: random.Random(11))
    _serial: int = 0

    def _event(self) -> dict[str, Any]:
        self._serial += 1
        rng, now = self._rng, datetime.now(UTC)
        kind = rng.choice(["purchase", "purchase", "purchase", "refund", "interaction",
                           "feedback"])
        data: dict[str, Any] = {
            "purchase": {"amount": f"{rng.randrange(100, 400000) / 100:.2f}",
                         "currency": "CNY", "category": rng.choice(["shoes", "bags", "tea"])},
            "refund": {"amount": f"{rng.randrange(100, 3000) / 100:.2f}", "currency": "CNY"},
            "interaction": {"channel": "app", "action": rng.choice(["visit", "referral"])},
            "feedback": {"rating": rng.randrange(1, 6), "nps": rng.randrange(11)},
        }[kind]
        when = now - timedelta(minutes=rng.randrange(200 * 24 * 60))
        return {"event_id": f"{self.system.prefix}-e{self._serial}", "type": kind,
                "customer_id": f"{self.system.prefix}-c{rng.randrange(self.customers)}",
                "occurred_at": when.isoformat(), "source": "pos", "data": data}

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`; then until every event sent so far is acknowledged."""
        waiting: list[dict[str, Any]] = []
        interval = self.batch / self.per_second
        async with httpx.AsyncClient(headers=AUTH, timeout=10) as client:
            while not stop.is_set() or waiting:
                started = time.monotonic()
                if not stop.is_set():
                    waiting += [self._event() for _ in range(self.batch)]
                waiting = await self._post(client, waiting[: self.batch * 5]) + waiting[
                    self.batch * 5:]
                await asyncio.sleep(max(interval - (time.monotonic() - started), 0.01))

    async def _post(self, client: httpx.AsyncClient,
                    events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Post; the events not acknowledged, to send again."""
        try:
            answer = await client.post(f"{self.system.ingest.url}/v1/events/batch",
                                       json={"events": events})
        except httpx.TransportError:
            self.failures += 1
            return events
        if answer.status_code != 200:
            self.failures += 1
            return events
        again = []
        if answer.json().get("unavailable"):
            self.failures += 1
        for event, result in zip(events, answer.json()["results"], strict=True):
            if result["status"] == "accepted":
                self.accepted[event["event_id"]] = event
            else:
                assert result["status"] == "unavailable", result
                again.append(event)
        return again


async def applied(engine: AsyncEngine, events: list[dict[str, Any]]) -> int:
    """How many of `events` the grader has applied (its dedupe table remembers each)."""
    async with engine.connect() as conn:
        return await applied_events(conn, events)


async def verify(engine: AsyncEngine, system: System, load: Load, report: Report, *,
                 bootstrap: str, within: float = 120) -> Report:
    """Every accepted event applied once, every tier change on the topic in order."""
    events = list(load.accepted.values())
    report.accepted = len(events)

    async def all_applied() -> None:
        assert await applied(engine, events) == len(events), system.logs()

    try:
        await eventually(all_applied, timeout=within, interval=0.2)
    finally:
        report.lost = len(events) - await applied(engine, events)
    differing = await differing_customers(engine, system.prefix, events)
    report.doubled = len(differing)  # customers whose state is not a fold of each event once
    assert differing == [], differing[:5]

    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT message_id, customer_id, ladder, sequence, sent_at IS NOT NULL AS sent"
            " FROM tier_changes WHERE customer_id LIKE :p"), {"p": f"{system.prefix}-%"})).all()
    report.changes = len(rows)
    lanes: dict[tuple[str, str], list[int]] = defaultdict(list)
    for row in rows:
        lanes[(row.customer_id, row.ladder)].append(row.sequence)
    for lane, sequences in lanes.items():
        assert sorted(sequences) == list(range(1, len(sequences) + 1)), lane
    wanted = {str(r.message_id) for r in rows}
    on_topic = await read_changes(bootstrap, system.topic_changes, wanted, within=within)
    report.changes_missing = len(wanted - {m["id"] for m in on_topic})
    assert report.changes_missing == 0
    seen: dict[tuple[str, str], int] = defaultdict(int)
    for message in on_topic:
        lane = (message["customer_id"], message["ladder"])
        # Duplicates (a resend of a run already seen) are allowed; n + 1 before n is not.
        assert message["sequence"] <= seen[lane] + 1, (lane, message["sequence"], seen[lane])
        seen[lane] = max(seen[lane], message["sequence"])
    return report


async def read_changes(bootstrap: str, topic: str, wanted: set[str], *,
                       within: float) -> list[dict[str, Any]]:
    """Every message of the topic, in each partition's order (a customer's messages are all
    in one partition), once every wanted id has arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    messages: list[dict[str, Any]] = []
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + within
        while not wanted <= {m["id"] for m in messages} and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                messages += [orjson.loads(record.value) for record in records]
    finally:
        await consumer.stop()
    return messages
