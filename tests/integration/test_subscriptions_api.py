"""The subscriptions API: auth, validation, secrets (shown once, stored encrypted, rotated),
address refusals at registration and at connect time (with a resolver stub), and two
notifier processes delivering each message once."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from typing import Any, ClassVar

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.webhook_support import (
    READ_KEY,
    Receiver,
    deliveries,
    notifier,
    record,
    subscribed,
    webhook_settings,
)
from tests.support import eventually, unique
from tests.unit.test_webhook_verifier import verifier_class

pytestmark = pytest.mark.integration


class StubResolver(AbstractResolver):
    """Answers from a table the test edits; an unknown name does not resolve."""

    table: ClassVar[dict[str, list[str]]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(hostname=host, host=ip, port=port,
                          family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                          proto=0, flags=socket.AI_NUMERICHOST)
            for ip in self.table[host]
        ]

    async def close(self) -> None: ...


@pytest.fixture
def names() -> dict[str, list[str]]:
    table = {
        "private.test": ["10.0.0.5"], "metadata.test": ["169.254.169.254"],
        "loopback.test": ["127.0.0.1"], "v6-loopback.test": ["::1"],
        "mixed.test": ["93.184.215.14", "192.168.1.10"], "ula.test": ["fd00:ec2::254"],
        "decimal.test": ["127.0.0.1"],
    }
    StubResolver.table = table
    return table


@pytest.mark.parametrize(("url", "reason"), [
    ("http://private.test/hook", "10.0.0.5"),
    ("http://metadata.test/latest/meta-data", "169.254.169.254"),
    ("http://loopback.test:8080/", "127.0.0.1"),
    ("http://v6-loopback.test/", "::1"),
    ("http://mixed.test/", "192.168.1.10"),
    ("http://ula.test/", "fd00:ec2::254"),
    ("http://127.0.0.1:9/", "127.0.0.1"),
    ("http://[::1]:9/", "::1"),
    ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1"),
    ("http://0.0.0.0/", "0.0.0.0"),  # noqa: S104 - an address the guard must refuse
    ("http://169.254.169.254/", "169.254.169.254"),
    ("http://nowhere.test/", "does not resolve"),
    ("ftp://private.test/", "scheme"),
    ("https://user:secret@private.test/", "credentials"),
])
async def test_urls_to_internal_addresses_are_refused(
    migrated_pg: str, broker: str, names: dict[str, list[str]], url: str, reason: str
) -> None:
    settings = webhook_settings(migrated_pg, broker, unique("tier-changes"),
                                webhook_allowed_networks="")
    async with notifier(settings, resolver=StubResolver) as api:
        answer = await api.post("/v1/subscriptions", json={"url": url})
        assert answer.status_code == 422, answer.text
        assert reason in answer.json()["title"]
        listed = (await api.get("/v1/subscriptions")).json()["items"]
        assert all(item["url"] != url for item in listed)


async def test_dns_that_changes_after_registration_is_refused_at_connect_time(
    engine: AsyncEngine, migrated_pg: str, broker: str, names: dict[str, list[str]]
) -> None:
    ladder, connections = unique("ladder"), []
    receiver = Receiver()
    # Only 127.0.0.1 is allowed; a second listener on 127.0.0.3 (same port) must never
    # be reached, whatever the name resolves to later.
    settings = webhook_settings(migrated_pg, broker, unique("tier-changes"),
                                webhook_allowed_networks="127.0.0.1/32")

    def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.close()

    async with receiver.running():
        trap = await asyncio.start_server(count, "127.0.0.3", receiver.port)
        names["hooks.test"] = ["127.0.0.1"]
        try:
            async with notifier(settings, resolver=StubResolver) as api, subscribed(
                api, f"http://hooks.test:{receiver.port}/hook", ladders=[ladder]
            ) as subscription:
                # Checked at registration; then the name moves (DNS rebinding).
                names["hooks.test"] = ["127.0.0.3"]
                await record(engine, unique("c"), ladder, range(1, 2))

                async def refused() -> None:
                    items = await deliveries(api, subscription["id"], status="pending")
                    assert len(items) == 1 and items[0]["last_error"], items
                    assert items[0]["last_error"].startswith("refused: 127.0.0.3")

                await eventually(refused)
        finally:
            trap.close()
            await trap.wait_closed()
    assert connections == []
    assert receiver.hits == []


async def test_auth_validation_and_not_found(migrated_pg: str, broker: str) -> None:
    settings = webhook_settings(migrated_pg, broker, unique("tier-changes"))
    async with notifier(settings) as api:
        anonymous = await api.get("/v1/subscriptions", headers={"Authorization": ""})
        assert anonymous.status_code == 401
        reader = await api.get("/v1/subscriptions",
                               headers={"Authorization": f"Bearer {READ_KEY}"})
        assert reader.status_code == 403
        for body in ({}, {"url": ""}, {"url": "https://x.example", "filter": {"colour": []}},
                     {"url": "https://x.example", "filter": {"directions": ["sideways"]}},
                     {"url": "https://x.example", "filter": {"types": ["tier.deleted"]}}):
            answer = await api.post("/v1/subscriptions", json=body)
            assert answer.status_code == 422, (body, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
        missing = "00000000-0000-0000-0000-000000000000"
        for method, path in (("GET", f"/v1/subscriptions/{missing}"),
                             ("DELETE", f"/v1/subscriptions/{missing}"),
                             ("GET", f"/v1/subscriptions/{missing}/deliveries"),
                             ("POST", f"/v1/subscriptions/{missing}/rotate-secret")):
            assert (await api.request(method, path)).status_code == 404, path


async def test_webhooks_need_the_secrets_key(migrated_pg: str, broker: str) -> None:
    settings = webhook_settings(migrated_pg, broker, unique("tier-changes"),
                                webhook_secrets_key=None)
    async with notifier(settings) as api:
        answer = await api.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/"})
        assert answer.status_code == 503
        assert "TIERFLOW_WEBHOOK_SECRETS_KEY" in answer.json()["title"]


async def test_secret_shown_once_stored_encrypted_and_rotated(
    engine: AsyncEngine, migrated_pg: str, broker: str
) -> None:
    ladder, receiver = unique("ladder"), Receiver()
    settings = webhook_settings(migrated_pg, broker, unique("tier-changes"))
    async with receiver.running(), notifier(settings) as api, subscribed(
        api, receiver.url, ladders=[ladder], to_tiers=["vip"]
    ) as subscription:
        sid, first = subscription["id"], subscription["secret"]
        assert first.startswith("whsec_")
        shown = (await api.get(f"/v1/subscriptions/{sid}")).json()
        assert "secret" not in shown and shown["filter"]["to_tiers"] == ["vip"]
        async with engine.connect() as conn:
            stored = (await conn.execute(text(
                "SELECT secret::text FROM subscriptions WHERE id = :id"), {"id": sid})).scalar()
        assert first.encode().hex() not in stored and first not in stored

        rotated = await api.post(f"/v1/subscriptions/{sid}/rotate-secret",
                                 json={"previous_valid_for_s": 3600})
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()["secret"]
        assert second != first and rotated.json()["previous_secret_expires_at"]
        await record(engine, unique("c"), ladder, range(1, 2))

        async def arrived() -> None:
            assert len(receiver.hits) == 1

        await eventually(arrived)
        hit = receiver.hits[0]
        assert verifier_class()(second).verify(hit.headers, hit.body)
        assert verifier_class()(first).verify(hit.headers, hit.body)  # until it expires
        assert hit.headers["Tierflow-Signature"].count("v1=") == 2


async def test_two_notifiers_deliver_each_message_once(
    engine: AsyncEngine, migrated_pg: str, broker: str
) -> None:
    ladder, receiver = unique("ladder"), Receiver()
    topic = unique("tier-changes")
    first = webhook_settings(migrated_pg, broker, topic)
    second = first.model_copy(update={})
    customers = [unique("c") for _ in range(40)]
    async with receiver.running(), notifier(first) as api, notifier(second), \
            subscribed(api, receiver.url, ladders=[ladder]) as subscription:
        written: list[Any] = []
        for sequence in range(1, 4):
            for customer in customers:
                written += await record(engine, customer, ladder, range(sequence, sequence + 1))

        async def all_arrived() -> None:
            assert len(set(receiver.ids())) == len(written)

        await eventually(all_arrived, timeout=30)

        async def all_delivered() -> None:
            items = await deliveries(api, subscription["id"], limit=1000)
            assert len(items) == len(written)
            assert {(d["status"], d["attempts"]) for d in items} == {("delivered", 1)}

        await eventually(all_delivered)
        assert max(Counter(receiver.ids()).values()) == 1
        for customer in customers:
            assert [m["sequence"] for m in receiver.messages()
                    if m["customer_id"] == customer] == [1, 2, 3]
