"""The outbox relay against the real PostgreSQL and broker: order, acks, failures."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.messages import OutboxRow
from services.notifier.metrics import NotifierMetrics
from services.notifier.relay import Relay
from shared.db import engine as db
from shared.embedded import EmbeddedBroker, free_port
from tests.integration.test_notifier_support import (
    LADDERS,
    RunningRelay,
    consume_mine,
    create_topic,
    failed,
    notifier_settings,
    record_changes,
    unsent_ids,
)
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


async def test_relays_every_row_once_in_sequence_order(
    engine: AsyncEngine, migrated_pg: str, broker: str
) -> None:
    topic = unique("tier-changes")
    await create_topic(broker, topic)
    customers = [unique("c") for _ in range(3)]
    rows = await record_changes(engine, customers, range(1, 4))
    relay = RunningRelay(notifier_settings(migrated_pg, broker, topic, relay_batch=5))
    async with relay.running():
        # Rows recorded while the relay runs are picked up too (poll or NOTIFY).
        rows += await record_changes(engine, customers, range(4, 7))
        received = await consume_mine(broker, topic, customers, len(rows))

        async def all_marked_sent() -> None:
            assert await unsent_ids(engine, rows) == set()

        await eventually(all_marked_sent)

    by_id = {str(r["message_id"]): r for r in rows}
    assert sorted(str(r["message_id"]) for r in rows) == sorted(
        dict(m.headers)["tierflow-message-id"].decode() for m in received
    )
    for message in received:
        headers = dict(message.headers)
        row = by_id[headers["tierflow-message-id"].decode()]
        assert message.key == row["customer_id"].encode()
        assert headers["tierflow-type"] == row["kind"].encode()
        assert orjson.loads(message.value) == row["payload"]
    for customer in customers:
        for ladder in LADDERS:
            sequences = [
                orjson.loads(m.value)["sequence"] for m in received
                if m.key == customer.encode() and orjson.loads(m.value)["ladder"] == ladder
            ]
            assert sequences == [1, 2, 3, 4, 5, 6]
    assert relay.sample("tierflow_notifier_relay_seconds_count") >= len(rows)


async def test_unreachable_broker_marks_nothing_and_a_later_relay_catches_up(
    engine: AsyncEngine, migrated_pg: str, broker: str
) -> None:
    topic = unique("tier-changes")
    await create_topic(broker, topic)
    customers = [unique("c")]
    rows = await record_changes(engine, customers, range(1, 3))
    nowhere = f"127.0.0.1:{free_port()}"
    stranded = RunningRelay(notifier_settings(migrated_pg, nowhere, topic))
    async with stranded.running():

        async def tried_twice() -> None:
            await stranded.is_leader()
            assert failed(stranded) >= 2 * len(rows)

        await eventually(tried_twice)
        assert await unsent_ids(engine, rows) == {r["message_id"] for r in rows}

    async with RunningRelay(notifier_settings(migrated_pg, broker, topic)).running():
        received = await consume_mine(broker, topic, customers, len(rows))
        assert [orjson.loads(m.value)["sequence"] for m in received if
                orjson.loads(m.value)["ladder"] == "tier"] == [1, 2]


async def test_broker_lost_mid_run_marks_nothing_then_recovers(
    engine: AsyncEngine, migrated_pg: str, tmp_path: Path
) -> None:
    server = EmbeddedBroker(log_path=tmp_path / "tansu.log")
    bootstrap = server.start()
    topic = unique("tier-changes")
    customers = [unique("c")]
    try:
        await create_topic(bootstrap, topic)
        settings = notifier_settings(migrated_pg, bootstrap, topic, produce_timeout_s=1.0)
        async with RunningRelay(settings).running() as relay:
            before = await record_changes(engine, customers, range(1, 2))
            await consume_mine(bootstrap, topic, customers, len(before))

            async def before_marked() -> None:
                assert await unsent_ids(engine, before) == set()

            await eventually(before_marked)  # its ack may trail the consumer seeing it
            server.stop()
            after = await record_changes(engine, customers, range(2, 4))

            async def failed_after_loss() -> None:
                assert failed(relay) >= len(after)

            await eventually(failed_after_loss, timeout=20)
            assert await unsent_ids(engine, after) == {r["message_id"] for r in after}
            # The same address again (memory-only, so the topic is recreated): it catches up.
            server.start()
            await create_topic(bootstrap, topic)
            received = await consume_mine(bootstrap, topic, customers, len(after), timeout=30)
            assert {dict(m.headers)["tierflow-message-id"].decode() for m in received} == {
                str(r["message_id"]) for r in after
            }
    finally:
        server.stop()


class FlakySender:
    """Acks everything except one message while `failing`; remembers what it acked, in order."""

    def __init__(self, poison: uuid.UUID) -> None:
        self.poison = poison
        self.failing = True
        self.attempts = 0
        self.acked: list[uuid.UUID] = []

    async def send(self, rows: Sequence[OutboxRow]) -> list[bool]:
        result = []
        for row in rows:
            ok = not (self.failing and row.message_id == self.poison)
            self.attempts += row.message_id == self.poison
            result.append(ok)
            if ok:
                self.acked.append(row.message_id)
        return result

    async def close(self) -> None:
        return None


async def test_exactly_the_acknowledged_rows_are_marked_sent(
    engine: AsyncEngine, migrated_pg: str
) -> None:
    customers = [unique("c")]
    recorded = await record_changes(engine, customers, range(1, 4))
    rows = [r for r in recorded if r["ladder"] == "tier"]
    first, poison, third = (r["message_id"] for r in rows)
    sender = FlakySender(poison)
    relay = Relay(
        connect=lambda: db.connect(migrated_pg), sender_factory=lambda: sender,
        metrics=NotifierMetrics.create(CollectorRegistry()), batch=1000, idle_s=0.02,
    )
    task = asyncio.create_task(relay.run())
    try:

        async def retried() -> None:
            assert sender.attempts >= 2

        await eventually(retried)
        # The sender decides what may be acked (KafkaSender stops a partition at its first
        # failure, tests/unit/test_notifier_sender.py); the relay marks exactly that.
        assert await unsent_ids(engine, rows) == {poison}
        sender.failing = False

        async def all_marked_sent() -> None:
            assert await unsent_ids(engine, rows) == set()

        await eventually(all_marked_sent)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    mine = [m for m in sender.acked if m in {first, poison, third}]
    assert mine == [first, third, poison]
