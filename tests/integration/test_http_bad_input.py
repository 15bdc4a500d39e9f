"""Bad input is a 4xx, never a 503 to retry: text PostgreSQL cannot hold (a NUL, a lone
surrogate) and numbers beyond bigint are refused at the HTTP boundary, and a data error
that reaches the database anyway is a 422. A frozen database makes /readyz answer 503 in
time instead of hanging."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import yaml
from fastapi import FastAPI
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.grader.app import create_app as create_grader
from services.grader.grading.policy import default_policy_document
from shared.db.engine import asyncpg_dsn
from shared.http import install_problem_handlers
from tests.integration.grader_support import grader_settings, running
from tests.integration.test_customer_lookups import without_fast_lookups
from tests.integration.webhook_support import notifier, webhook_settings
from tests.support import unique

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


def assert_problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert "retry-after" not in answer.headers
    body: dict[str, Any] = answer.json()
    return body


def grader(url: str) -> FastAPI:
    return create_grader(grader_settings(url, "127.0.0.1:9", grader_role="api"))


@pytest.mark.parametrize("fast", [True, False])
async def test_a_customer_id_with_a_nul_is_not_found(migrated_pg: str, fast: bool) -> None:
    app = grader(migrated_pg) if fast else without_fast_lookups(grader(migrated_pg))
    async with running(app) as client:
        answer = await client.get("/v1/customers/a%00b")
    body = assert_problem(answer, 404)
    assert "1 to 128 characters" in body["detail"]


@pytest.mark.parametrize("ids", [b'["c-1", "\\ud800"]', b'["a\\u0000b"]', b'["c 1"]'])
async def test_a_lookup_of_an_impossible_id_is_422(migrated_pg: str, ids: bytes) -> None:
    async with running(grader(migrated_pg)) as client:
        answer = await client.post("/v1/customers/lookup",
                                   content=b'{"customer_ids": ' + ids + b"}",
                                   headers={"Content-Type": "application/json"})
    body = assert_problem(answer, 422)
    assert body["errors"][0]["field"].startswith("body.customer_ids.")


async def test_a_job_id_that_is_not_a_uuid_is_no_job(migrated_pg: str) -> None:
    """An id that is not a UUID names no job: `404`, as an unknown UUID is (it was a
    `422`), and the route documents `404` for both and no `422`."""
    unknown = str(uuid.uuid4())
    async with running(grader(migrated_pg)) as client:
        answers = {job_id: await client.get(f"/v1/jobs/{job_id}")
                   for job_id in ("not-a-uuid", "12345", unknown[:-1], "a%00b", unknown)}
        document = (await client.get("/openapi.json")).json()
    documented = document["paths"]["/v1/jobs/{job_id}"]["get"]
    for job_id, answer in answers.items():
        body = assert_problem(answer, 404)
        assert body["status"] == 404 and body["title"].startswith("No job"), job_id
    assert "422" not in documented["responses"] and "404" in documented["responses"]


def policy_with_label(label: str) -> dict[str, Any]:
    document = default_policy_document()
    document["ladders"][0]["tiers"][0]["label"] = label
    return document


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/json", orjson.dumps(policy_with_label("VIP\x00"))),
    # A YAML "\0" escape is a NUL. (A "\ud800" escape, a lone surrogate, is refused by the
    # policy's YAML reader as not YAML at all: see the next test.)
    ("application/yaml", yaml.safe_dump(policy_with_label("VIP")).replace(
        "label: VIP\n", 'label: "VIP\\0"\n', 1).encode()),
])
async def test_a_policy_label_postgres_cannot_store_is_invalid(
    migrated_pg: str, content_type: str, body: bytes
) -> None:
    headers = {"Content-Type": content_type}
    async with running(grader(migrated_pg)) as client:
        before = (await client.get("/v1/policy")).json()["version"]
        validated = await client.post("/v1/policy/validate", content=body, headers=headers)
        stored = await client.put("/v1/policy", content=body, headers=headers)
        after = (await client.get("/v1/policy")).json()["version"]
    assert validated.status_code == 200
    assert validated.json()["valid"] is False
    assert [p["path"] for p in validated.json()["problems"]] == ["ladders[0].tiers[0].label"]
    errors = assert_problem(stored, 422)["errors"]
    assert errors == validated.json()["problems"]
    assert after == before


async def test_a_yaml_policy_with_a_lone_surrogate_is_not_yaml(migrated_pg: str) -> None:
    body = yaml.safe_dump(policy_with_label("VIP")).replace(
        "label: VIP\n", 'label: "VIP\\ud800"\n', 1).encode()
    headers = {"Content-Type": "application/yaml"}
    async with running(grader(migrated_pg)) as client:
        before = (await client.get("/v1/policy")).json()["version"]
        validated = await client.post("/v1/policy/validate", content=body, headers=headers)
        stored = await client.put("/v1/policy", content=body, headers=headers)
        after = (await client.get("/v1/policy")).json()["version"]
    assert "invalid Unicode character escape" in assert_problem(validated, 400)["title"] + (
        assert_problem(validated, 400).get("detail") or "")
    assert_problem(stored, 400)
    assert after == before


@pytest.mark.parametrize("request_args", [
    ("POST", "/v1/subscriptions", {"url": "http://127.0.0.1:9/\x00"}),
    ("POST", "/v1/subscriptions", {"url": "http://127.0.0.1:9/", "filter": {
        "ladders": ["tier\x00"]}}),
    ("POST", "/v1/subscriptions", {"url": "http://127.0.0.1:9/", "filter": {
        "to_tiers": ["\ud800"]}}),
    ("POST", "/v1/subscriptions/{sid}/deliveries/9223372036854775808/retry", None),
    ("GET", "/v1/subscriptions/{sid}/deliveries?cursor=9223372036854775808", None),
])
async def test_subscription_input_postgres_cannot_store_is_422(
    migrated_pg: str, broker: str, request_args: tuple[str, str, Any]
) -> None:
    method, path, body = request_args
    settings = webhook_settings(migrated_pg, broker, unique("changes"))
    async with notifier(settings) as client:
        created = await client.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/"})
        sid = created.json()["id"]
        content = None if body is None else json.dumps(body).encode()  # keeps \ud800
        answer = await client.request(method, path.format(sid=sid), content=content,
                                      headers={"Content-Type": "application/json"})
        await client.delete(f"/v1/subscriptions/{sid}")
    assert_problem(answer, 422)


async def test_a_database_data_error_is_422_not_503(
    migrated_pg: str, engine: AsyncEngine
) -> None:
    """Whatever slips past the checks: PostgreSQL's own data errors (class 22), through
    asyncpg and through SQLAlchemy."""
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/asyncpg")
    async def raw() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(migrated_pg))
        try:
            await conn.fetchval("SELECT $1::text", "a\x00b")
        finally:
            await conn.close()

    @app.get("/sqlalchemy")
    async def through_sqlalchemy() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1 / 0"))

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in ("/asyncpg", "/sqlalchemy"):
            assert_problem(await client.get(path), 422)


class FreezableProxy:
    """A TCP relay in front of PostgreSQL that can stop passing bytes on: a database that
    still holds its connections open but answers nothing, as a frozen one does."""

    def __init__(self, upstream_url: str) -> None:
        url = make_url(upstream_url)
        socket_dir = url.query.get("host")
        self.unix = (f"{socket_dir}/.s.PGSQL.{url.port or 5432}"
                     if isinstance(socket_dir, str) else None)
        self.upstream = (url.host or "127.0.0.1", url.port or 5432)
        self.url = url.set(query={})
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.writers: list[asyncio.StreamWriter] = []

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """The proxy listening; a URL to the database through it."""
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield self.url.set(host="127.0.0.1", port=port).render_as_string(
                hide_password=False)
        finally:
            self.flowing.set()
            server.close()
            for writer in self.writers:
                writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.unix is not None:
            up_reader, up_writer = await asyncio.open_unix_connection(Path(self.unix))
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self.writers += [writer, up_writer]
        with contextlib.suppress(ConnectionError):
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self.flowing.wait()
            writer.write(data)
            await writer.drain()
        writer.close()


async def test_readyz_answers_503_in_time_when_the_database_freezes(migrated_pg: str) -> None:
    proxy = FreezableProxy(migrated_pg)
    async with proxy.serving() as url, running(grader(url)) as client:
        assert (await client.get("/readyz")).status_code == 200
        proxy.flowing.clear()
        # Asked in a task of its own: cancelling the request itself (asyncio.timeout) could
        # be swallowed by the readiness check, which counts a TimeoutError as "not ready".
        probe = asyncio.create_task(client.get("/readyz"))
        answered, _ = await asyncio.wait({probe}, timeout=4)  # the bound is 2 s
        proxy.flowing.set()
        answer = await probe
        assert answered, "/readyz did not answer within 4 s"
        assert answer.status_code == 503
        assert answer.json() == {"ready": False, "checks": {"database": False}}
