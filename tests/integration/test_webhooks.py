"""Webhook delivery end to end: the real notifier app, PostgreSQL, broker and HTTP
receivers on loopback; time moved by the test where the retry schedule is concerned."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.webhooks.schedule import MAX_ATTEMPTS, RETRY_DELAYS_S
from tests.integration.test_notifier_support import consume_mine
from tests.integration.webhook_support import (
    Clock,
    Hit,
    Receiver,
    at,
    deliveries,
    notifier,
    record,
    subscribed,
    webhook_settings,
)
from tests.support import eventually, unique
from tests.unit.test_webhook_verifier import verifier_class

pytestmark = pytest.mark.integration


def settled(item: dict[str, Any], attempts: int) -> bool:
    """The delivery's `attempts`-th attempt is over and recorded (a claim raises `attempts`
    first; the result then sets the status, or a next attempt later than this one)."""
    return item["attempts"] == attempts and (
        item["status"] != "pending"
        or at(str(item["next_attempt_at"])) > at(str(item["last_attempt_at"])))


async def test_deliveries_are_signed_and_carry_the_topic_message(
    engine: AsyncEngine, migrated_pg: str, broker: str
) -> None:
    topic, ladder, customer = unique("tier-changes"), unique("ladder"), unique("c")
    receiver = Receiver()
    async with receiver.running(), notifier(webhook_settings(migrated_pg, broker, topic)) as api, \
            subscribed(api, receiver.url, ladders=[ladder]) as subscription:
        rows = await record(engine, customer, ladder, range(1, 4))

        async def all_arrived() -> None:
            assert len(receiver.hits) == 3

        await eventually(all_arrived)
        on_topic = await consume_mine(broker, topic, [customer], 3)
        verifier = verifier_class()(subscription["secret"])
        for hit, message in zip(receiver.hits, on_topic, strict=True):
            assert verifier.verify(hit.headers, hit.body)
            assert hit.body == message.value  # byte for byte what went to the topic
            assert hit.event_id == dict(message.headers)["tierflow-message-id"].decode()
        assert [m["sequence"] for m in receiver.messages()] == [1, 2, 3]
        assert [m["type"] for m in receiver.messages()] == [
            "tier.changed", "tier.changed", "tier.downgrade_scheduled"]
        assert receiver.messages()[0]["actions"] == ["exclusive_offer"]
        assert {str(r["message_id"]) for r in rows} == set(receiver.ids())

        async def marked_delivered() -> None:
            items = await deliveries(api, subscription["id"])
            assert [(d["status"], d["attempts"], d["last_status"]) for d in items] == [
                ("delivered", 1, 200)] * 3

        await eventually(marked_delivered)
        metrics = (await api.get("/metrics")).text
        label = f'subscription="{subscription["id"]}"'
        assert f'tierflow_webhook_deliveries_total{{outcome="delivered",{label}}} 3.0' in metrics
        assert f'tierflow_webhook_attempts_total{{result="2xx",{label}}} 3.0' in metrics


async def test_three_failures_then_success_follows_the_schedule(
    engine: AsyncEngine, migrated_pg: str, broker: str
) -> None:
    clock, ladder = Clock(), unique("ladder")

    async def fail_three(hit: Hit) -> int:
        return 500 if len(receiver.hits) <= 3 else 204

    receiver = Receiver(fail_three)
    settings = webhook_settings(migrated_pg, broker, unique("tier-changes"))
    async with receiver.running(), notifier(settings, clock=clock) as api, \
            subscribed(api, receiver.url, ladders=[ladder]) as subscription:
        await record(engine, unique("c"), ladder, range(1, 2))
        for attempt in range(1, 5):

            async def attempted(n: int = attempt) -> dict[str, Any]:
                assert len(receiver.hits) == n
                items = await deliveries(api, subscription["id"])
                assert len(items) == 1 and settled(items[0], n), items
                return items[0]

            item = await eventually(attempted)
            if attempt < 4:
                assert item["status"] == "pending" and item["last_status"] == 500
                due = at(str(item["next_attempt_at"]))
                waited = (due - at(str(item["last_attempt_at"]))).total_seconds()
                assert waited == RETRY_DELAYS_S[attempt - 1]  # the schedule, jitter fixed at 0
                clock.move_to(due)
        (item,) = await deliveries(api, subscription["id"])
        assert (item["status"], item["attempts"], item["last_status"]) == ("delivered", 4, 204)
        assert len(set(receiver.ids())) == 1  # the same message id every time
        verifier = verifier_class()(subscription["secret"])
        assert all(verifier.verify(h.headers, h.body, now=clock().timestamp())
                   for h in receiver.hits[-1:])


async def test_a_dead_receiver_ends_failed_and_a_manual_retry_delivers(
    engine: AsyncEngine, migrated_pg: str, broker: str
) -> None:
    clock, ladder, status = Clock(), unique("ladder"), [503]

    async def answer(_: Hit) -> int:
        return status[0]

    receiver = Receiver(answer)
    settings = webhook_settings(migrated_pg, broker, unique("tier-changes"))
    async with receiver.running(), notifier(settings, clock=clock) as api, \
            subscribed(api, receiver.url, ladders=[ladder]) as subscription:
        sid = subscription["id"]
        await record(engine, unique("c"), ladder, range(1, 2))
        for attempt in range(1, MAX_ATTEMPTS + 1):

            async def attempted(n: int = attempt) -> dict[str, Any]:
                items = await deliveries(api, sid)
                assert len(items) == 1 and settled(items[0], n), items
                assert items[0]["last_status"] == 503
                return items[0]

            item = await eventually(attempted)
            if item["status"] == "pending":
                clock.move_to(at(str(item["next_attempt_at"])))
        assert item["status"] == "failed" and item["next_attempt_at"] is None
        assert len(receiver.hits) == MAX_ATTEMPTS
        assert [d["id"] for d in await deliveries(api, sid, status="failed")] == [item["id"]]

        status[0] = 200
        again = await api.post(f"/v1/subscriptions/{sid}/deliveries/{item['id']}/retry")
        assert again.status_code == 202, again.text

        async def delivered() -> None:
            (done,) = await deliveries(api, sid)
            assert (done["status"], done["attempts"]) == ("delivered", MAX_ATTEMPTS + 1)

        await eventually(delivered)
        busy = await api.post(f"/v1/subscriptions/{sid}/deliveries/999999999/retry")
        assert busy.status_code == 404


async def test_bulk_retry_and_a_failed_manual_retry(
    engine: AsyncEngine, migrated_pg: str, broker: str
) -> None:
    clock, ladder, status = Clock(), unique("ladder"), [500]

    async def answer(_: Hit) -> int:
        return status[0]

    receiver = Receiver(answer)
    settings = webhook_settings(migrated_pg, broker, unique("tier-changes"))
    async with receiver.running(), notifier(settings, clock=clock) as api, \
            subscribed(api, receiver.url, ladders=[ladder]) as subscription:
        sid = subscription["id"]
        for _ in range(3):
            await record(engine, unique("c"), ladder, range(1, 2))

        # Each round, every delivery makes its next attempt; then time jumps past the
        # longest wait, so the whole schedule runs out in MAX_ATTEMPTS rounds.
        for round_ in range(1, MAX_ATTEMPTS + 1):

            async def attempted(n: int = round_) -> None:
                assert len(receiver.hits) == 3 * n
                items = await deliveries(api, sid)
                assert len(items) == 3 and all(settled(d, n) for d in items), items

            await eventually(attempted)
            clock.advance(RETRY_DELAYS_S[-1] * 2)

        async def all_failed() -> None:
            items = await deliveries(api, sid)
            assert [d["status"] for d in items] == ["failed"] * 3, items

        await eventually(all_failed)

        # A manual retry is one attempt: failing again, it is failed again.
        retried = await api.post(f"/v1/subscriptions/{sid}/deliveries/retry", json={})
        assert retried.json() == {"retried": 3}

        async def failed_again() -> None:
            items = await deliveries(api, sid, status="failed")
            assert [d["attempts"] for d in items] == [MAX_ATTEMPTS + 1] * 3

        await eventually(failed_again)
        status[0] = 200
        assert (await api.post(f"/v1/subscriptions/{sid}/deliveries/retry")).json() == {
            "retried": 3}

        async def delivered() -> None:
            assert {d["status"] for d in await deliveries(api, sid)} == {"delivered"}

        await eventually(delivered)


async def test_a_customer_in_retry_holds_back_only_its_own_later_changes(
    engine: AsyncEngine, migrated_pg: str, broker: str
) -> None:
    clock, ladder = Clock(), unique("ladder")
    stuck, other = unique("stuck"), unique("other")
    failed_once: set[int] = set()

    async def fail_stuck_first(hit: Hit) -> int:
        message = receiver.messages()[-1]
        if message["customer_id"] == stuck and message["sequence"] not in failed_once:
            failed_once.add(message["sequence"])
            return 500
        return 200

    receiver = Receiver(fail_stuck_first)
    settings = webhook_settings(migrated_pg, broker, unique("tier-changes"))
    async with receiver.running(), notifier(settings, clock=clock) as api, \
            subscribed(api, receiver.url, ladders=[ladder]) as subscription:
        await record(engine, stuck, ladder, range(1, 4))
        await record(engine, other, ladder, range(1, 4))

        def seen(customer: str) -> list[int]:
            return [m["sequence"] for m in receiver.messages() if m["customer_id"] == customer]

        async def waiting_on(sequence: int, so_far: list[int]) -> None:
            """stuck's `sequence` failed once and its retry is scheduled; nothing after it
            was sent; the other customer went through regardless."""
            assert seen(other) == [1, 2, 3]
            assert seen(stuck) == so_far
            (head,) = [d for d in await deliveries(api, subscription["id"], status="pending")
                       if d["customer_id"] == stuck and d["sequence"] == sequence]
            assert settled(head, 1), head

        for sequence, so_far in ((1, [1]), (2, [1, 1, 2]), (3, [1, 1, 2, 2, 3])):
            await eventually(lambda s=sequence, f=so_far: waiting_on(s, f))
            clock.advance(RETRY_DELAYS_S[0] * 2)

        async def stuck_in_order() -> None:
            # Each of stuck's changes failed once and was retried before the next went out.
            assert seen(stuck) == [1, 1, 2, 2, 3, 3]

        await eventually(stuck_in_order)


async def test_a_slow_receiver_does_not_delay_a_healthy_one(
    engine: AsyncEngine, migrated_pg: str, broker: str
) -> None:
    ladder, count = unique("ladder"), 60
    release = asyncio.Event()

    async def slow(_: Hit) -> int:
        await release.wait()
        return 200

    slow_receiver, healthy = Receiver(slow), Receiver()
    settings = webhook_settings(migrated_pg, broker, unique("tier-changes"),
                                webhook_concurrency=8)
    async with slow_receiver.running(), healthy.running(), notifier(settings) as api, \
            subscribed(api, slow_receiver.url, ladders=[ladder]), \
            subscribed(api, healthy.url, ladders=[ladder]):
        started = time.monotonic()
        for _ in range(count):
            await record(engine, unique("c"), ladder, range(1, 2))

        async def healthy_has_all() -> None:
            assert len(healthy.hits) == count

        await eventually(healthy_has_all)
        took = healthy.hits[-1].at - started
        # The slow receiver holds all its slots and has answered nothing yet.
        assert len(slow_receiver.hits) == 8 and slow_receiver.answered == []
        print(  # noqa: T201 - the measurement, shown with -s
            f"healthy receiver: {count} deliveries {took * 1000:.0f} ms after the first"
            f" change, while the slow one held {len(slow_receiver.hits)} requests open")
        release.set()

        async def slow_catches_up() -> None:
            assert len(slow_receiver.hits) == count

        await eventually(slow_catches_up)


async def test_timeouts_and_redirects_are_failed_attempts(
    engine: AsyncEngine, migrated_pg: str, broker: str
) -> None:
    ladder, never = unique("ladder"), asyncio.Event()

    async def hang(_: Hit) -> int:
        await never.wait()
        return 200

    hanging, elsewhere = Receiver(hang), Receiver()

    async def redirect(_: Hit) -> int:
        raise web.HTTPFound(elsewhere.url)

    redirecting = Receiver(redirect)
    settings = webhook_settings(migrated_pg, broker, unique("tier-changes"),
                                webhook_timeout_s=0.5)
    async with hanging.running(), redirecting.running(), elsewhere.running(), \
            notifier(settings) as api, \
            subscribed(api, hanging.url, ladders=[ladder]) as slow, \
            subscribed(api, redirecting.url, ladders=[ladder]) as moved:
        await record(engine, unique("c"), ladder, range(1, 2))

        async def failed_once(sid: str, error: str) -> None:
            items = await deliveries(api, sid)
            assert len(items) == 1 and items[0]["attempts"] == 1, items
            assert items[0]["status"] == "pending" and error in str(items[0]["last_error"])

        await eventually(lambda: failed_once(slow["id"], "timeout: no answer within 0.5 s"))
        await eventually(lambda: failed_once(moved["id"], "answered 302"))
        assert elsewhere.hits == []  # the redirect was not followed
        never.set()
