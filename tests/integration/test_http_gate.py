"""The key before the body, on every route of every app, built from the apps' own route
tables: each route under /v1 x {no key, unknown key, key without the scope} is refused
(401/401/403) whatever its body (malformed, larger than any limit), and nothing behind the
gate ever sees the request. Every route that takes a body refuses one over its limit (413),
declared or streamed."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.admin import NewTopic
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from pydantic import SecretStr
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from services.grader.app import create_app as create_grader
from services.ingest.app import create_app as create_ingest
from services.notifier.app import create_app as create_notifier
from shared.http import KeyGate
from shared.kafka import ensure_topics
from shared.settings import IngestSettings
from tests.integration.grader_support import grader_settings
from tests.integration.webhook_support import Clock, webhook_settings
from tests.support import unique
from tests.unit.test_ingest_api import FakePublisher

pytestmark = pytest.mark.integration

ADMIN, READER, WRITER = "gate-admin-key-0001", "gate-reader-key-001", "gate-writer-key-001"
READER_WRITER = "gate-reader-writer-01"
KEYS = {ADMIN: ["admin"], READER: ["tiers:read"], WRITER: ["events:write"],
        READER_WRITER: ["tiers:read", "events:write"]}
API_KEYS = SecretStr(orjson.dumps(KEYS).decode())
# What the contract (§6) says each part of /v1 needs; a route under none of these fails
# the test until its scope is written here.
SCOPES = {"/v1/customers": "tiers:read", "/v1/stats": "tiers:read",
          "/v1/ladders": "tiers:read", "/v1/dashboard": "tiers:read", "/v1/policy": "admin",
          "/v1/jobs": "admin", "/v1/subscriptions": "admin", "/v1/events": "events:write"}
# A key with every scope but the one a route needs (and not admin).
LACKING = {"tiers:read": WRITER, "events:write": READER, "admin": READER_WRITER}
OPEN = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs",
        "/docs/oauth2-redirect", "/redoc",
        "/", "/dashboard/{name}"}  # the dashboard's page and files: no data in them
PATH_VALUES = {"customer_id": "c-1", "job_id": str(uuid.uuid4()), "sid": str(uuid.uuid4()),
               "delivery_id": "1", "ladder": "tier", "tier": "vip", "version": "1"}
OVER_ANY_LIMIT = 1_048_577  # bytes: more than every app's limit
NOT_READING_A_BODY = {("POST", "/v1/subscriptions/{sid}/deliveries/{delivery_id}/retry")}
BODY_METHODS = {"POST", "PUT", "PATCH"}


class Spy:
    """Innermost middleware: every request that got past the gate."""

    def __init__(self, app: ASGIApp, *, seen: list[str]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


def spied(app: FastAPI) -> list[str]:
    """Install a Spy inside every other middleware; the list it fills."""
    seen: list[str] = []
    app.user_middleware.append(Middleware(Spy, seen=seen))
    return seen


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path format) of every route of the app, HEAD left out."""
    return sorted((method, route.path) for route in iter_route_contexts(app.routes)
                  for method in (route.methods or ()) if method != "HEAD")


def needed_scope(path: str) -> str:
    prefixes = [p for p in SCOPES if path == p or path.startswith(p + "/")]
    assert prefixes, f"{path}: which scope does it need? Add it to SCOPES"
    return SCOPES[max(prefixes, key=len)]


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m[1]], path)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def refusals_that_failed(app: FastAPI, client: httpx.AsyncClient,
                               seen: list[str]) -> list[str]:
    """Every way a request that may not be made was not refused before the app saw it."""
    failures = []
    bodies = {"no body": b"", "malformed": b'{"customer_ids": ["c-1"',
              "oversized": b"{" * OVER_ANY_LIMIT}
    for method, path in routes(app):
        if path in OPEN:
            continue
        assert path.startswith("/v1/"), f"{path} is neither open nor under /v1"
        scope = needed_scope(path)
        cases = {"no key": ({}, 401), "unknown key": (bearer("no-such-key-000001"), 401),
                 f"key without {scope}": (bearer(LACKING[scope]), 403)}
        for who, (headers, status) in cases.items():
            for kind, body in bodies.items():
                seen.clear()
                answer = await client.request(
                    method, concrete(path), content=body,
                    headers={**headers, "Content-Type": "application/json"})
                if (answer.status_code != status or seen
                        or answer.headers["content-type"] != "application/problem+json"
                        or (status == 401) != ("www-authenticate" in answer.headers)):
                    failures.append(f"{method} {path}, {who}, {kind} body: "
                                    f"{answer.status_code}, reached the app: {bool(seen)}")
    return failures


async def authorized_reach_the_app(app: FastAPI, client: httpx.AsyncClient,
                                   seen: list[str]) -> None:
    """The spy sees what the gate lets through (so its silence above means something)."""
    for method, path in routes(app):
        if path in OPEN or (method, path) == ("GET", "/v1/customers/{customer_id}"):
            continue  # (that one is answered by FastLookups, in front of the gate)
        seen.clear()
        answer = await client.request(method, concrete(path), headers=bearer(ADMIN),
                                      content=b"{}")
        assert answer.status_code not in (401, 403), (method, path, answer.text)
        assert seen == [f"{method} {concrete(path)}"], (method, path)


async def oversized_bodies_refused(app: FastAPI, client: httpx.AsyncClient) -> list[str]:
    """Every route that takes a body answers 413 to one over its limit, declared or not."""

    async def streamed() -> AsyncIterator[bytes]:
        for _ in range(OVER_ANY_LIMIT // 65536 + 1):
            yield b" " * 65536

    failures = []
    for method, path in routes(app):
        if method not in BODY_METHODS or path in OPEN:
            continue
        key = bearer(ADMIN)
        sends: dict[str, Any] = {"declared": b" " * OVER_ANY_LIMIT}
        if (method, path) not in NOT_READING_A_BODY:
            sends["streamed"] = streamed()
        for how, content in sends.items():
            answer = await client.request(
                method, concrete(path), content=content,
                headers={**key, "Content-Type": "application/json"})
            if (answer.status_code != 413
                    or answer.headers["content-type"] != "application/problem+json"):
                failures.append(f"{method} {path}, {how}: {answer.status_code}")
    return failures


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


def ingest_app() -> FastAPI:
    return create_ingest(IngestSettings(api_keys=API_KEYS, max_body_bytes=65536),
                         publisher=FakePublisher())


@pytest.fixture
async def apps(migrated_pg: str, broker: str) -> dict[str, Callable[[], FastAPI]]:
    notifier_settings = webhook_settings(migrated_pg, broker, unique("changes"),
                                         api_keys=API_KEYS)
    await ensure_topics(notifier_settings, [NewTopic(notifier_settings.topic_tier_changes,
                                                     1, 1)])
    return {
        "grader": lambda: create_grader(grader_settings(
            migrated_pg, "127.0.0.1:9", grader_role="api", api_keys=API_KEYS)),
        "notifier": lambda: create_notifier(notifier_settings, clock=Clock()),
        "ingest": ingest_app,
    }


@pytest.mark.parametrize("name", ["grader", "notifier", "ingest"])
async def test_every_route_checks_the_key_before_the_body(
    name: str, apps: dict[str, Callable[[], FastAPI]]
) -> None:
    app = apps[name]()
    seen = spied(app)
    async with serving(app) as client:
        assert await refusals_that_failed(app, client, seen) == []
        await authorized_reach_the_app(app, client, seen)


@pytest.mark.parametrize("name", ["grader", "notifier", "ingest"])
async def test_every_route_with_a_body_limits_it(
    name: str, apps: dict[str, Callable[[], FastAPI]]
) -> None:
    app = apps[name]()
    async with serving(app) as client:
        assert await oversized_bodies_refused(app, client) == []


async def test_a_route_without_the_gate_is_caught() -> None:
    """The checks above fail for an app whose routes are not behind the gate."""
    app = ingest_app()
    app.user_middleware = [m for m in app.user_middleware if m.cls is not KeyGate]
    seen = spied(app)
    async with serving(app) as client:
        failures = await refusals_that_failed(app, client, seen)
    assert len(failures) == 2 * 3 * 3  # two routes x three callers x three bodies
