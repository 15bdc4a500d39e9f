"""Helpers for the webhook tests (this module holds no tests): receivers on loopback, a
clock the test moves, and a notifier app run in-process against the real services."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from aiohttp import web
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver
from aiokafka.admin import NewTopic
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.app import create_app
from shared.db.tables import tier_changes
from shared.kafka import ensure_topics
from shared.settings import NotifierSettings
from tests.integration.test_notifier_support import change

ADMIN_KEY = "webhook-tests-admin-key-0001"
READ_KEY = "webhook-tests-read-key-00001"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


class Clock:
    """Real time until the test moves it; then it stays where it was put."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def move_to(self, moment: datetime) -> None:
        self.now = max(self.now, moment)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Hit:
    """One request a receiver got."""

    event_id: str
    body: bytes
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival


Respond = Callable[[Hit], Awaitable[int]]


async def ok(_: Hit) -> int:
    return 200


@dataclass
class Receiver:
    """An HTTP server on loopback that records every request and answers `respond`."""

    respond: Respond = ok
    host: str = "127.0.0.1"
    hits: list[Hit] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)  # monotonic time of each answer

    async def _handle(self, request: web.Request) -> web.Response:
        hit = Hit(request.headers.get("Tierflow-Event-Id", ""), await request.read(),
                  dict(request.headers), time.monotonic())
        self.hits.append(hit)
        status = await self.respond(hit)
        self.answered.append(time.monotonic())
        return web.Response(status=status, text="ok")

    @contextlib.asynccontextmanager
    async def running(self, port: int = 0) -> AsyncIterator[Receiver]:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, port)
        await site.start()
        self.port = runner.addresses[0][1]
        try:
            yield self
        finally:
            await runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    def ids(self) -> list[str]:
        return [hit.event_id for hit in self.hits]

    def messages(self) -> list[dict[str, Any]]:
        return [orjson.loads(hit.body) for hit in self.hits]


def webhook_settings(pg_url: str, bootstrap: str, topic: str, **extra: Any) -> NotifierSettings:
    """Settings for a notifier under test: loopback allowed, short polls."""
    values: dict[str, Any] = {
        "database_url": SecretStr(pg_url), "kafka_bootstrap": bootstrap,
        "topic_tier_changes": topic, "relay_idle_ms": 20, "webhook_poll_ms": 50,
        "webhook_secrets_key": SecretStr(Fernet.generate_key().decode()),
        "webhook_allowed_networks": "127.0.0.0/8,::1/128",
        "api_keys": SecretStr(orjson.dumps(
            {ADMIN_KEY: ["admin"], READ_KEY: ["tiers:read"]}).decode()),
    }
    return NotifierSettings(**{**values, **extra})


@contextlib.asynccontextmanager
async def notifier(
    settings: NotifierSettings, *, clock: Clock | None = None,
    resolver: Callable[[], AbstractResolver] = ThreadedResolver, spread: float = 0.0,
) -> AsyncIterator[httpx.AsyncClient]:
    """The notifier app running (relay, dispatcher), and a client for its API."""
    await ensure_topics(settings, [NewTopic(settings.topic_tier_changes, 3, 1)])
    app = create_app(settings, clock=clock or Clock(), resolver=resolver, spread=lambda: spread)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://notifier", headers=AUTH
    ) as client:
        yield client


@contextlib.asynccontextmanager
async def subscribed(
    client: httpx.AsyncClient, url: str, **filter_: list[str]
) -> AsyncIterator[dict[str, Any]]:
    """A subscription for the duration of the block (deleted after, with its deliveries)."""
    answer = await client.post("/v1/subscriptions", json={"url": url, "filter": filter_})
    assert answer.status_code == 201, answer.text
    subscription: dict[str, Any] = answer.json()
    try:
        yield subscription
    finally:
        await client.delete(f"/v1/subscriptions/{subscription['id']}")


async def record(
    engine: AsyncEngine, customer: str, ladder: str, sequences: range
) -> list[dict[str, Any]]:
    """Tier changes as the grader records them (one transaction each), with the NOTIFY."""
    rows = []
    for sequence in sequences:
        row = change(customer, ladder, sequence)  # every third: tier.downgrade_scheduled
        async with engine.begin() as conn:
            await conn.execute(insert(tier_changes), [row])
            await conn.execute(text("NOTIFY tierflow_outbox"))
        rows.append(row)
    return rows


async def deliveries(client: httpx.AsyncClient, sid: str, **params: Any) -> list[dict[str, Any]]:
    answer = await client.get(f"/v1/subscriptions/{sid}/deliveries", params=params)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)
