"""Errors leave every HTTP surface as problem+json; a dependency failure is a 503."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.exc import OperationalError

from services.grader.app import create_app as create_grader
from services.ingest.app import create_app as create_ingest
from services.notifier.app import create_app as create_notifier
from shared.http import PROBLEM, ApiKeys, KeyGate, install_problem_handlers
from shared.settings import GraderSettings, IngestSettings, NotifierSettings


def _app(error: Exception) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return app


@pytest.mark.parametrize("error", [
    ConnectionRefusedError("db down"), OperationalError("SELECT 1", {}, Exception("gone")),
    TimeoutError(),
])
async def test_a_dependency_failure_is_a_retryable_503(error: Exception) -> None:
    transport = httpx.ASGITransport(app=_app(error))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = await client.get("/boom")
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"] == "2"
    assert answer.json()["status"] == 503


async def test_allows_agrees_with_the_gate() -> None:
    keys = ApiKeys({hashlib.sha256(k.encode()).hexdigest(): frozenset(s) for k, s in {
        "reader": {"tiers:read"}, "boss": {"admin"}, "writer": {"events:write"}}.items()})
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(KeyGate, keys=keys, scopes={"/v1/read": "tiers:read"}, max_body=10)

    @app.get("/v1/read")
    async def read() -> None:
        return None

    headers = ["Bearer reader", "bearer  boss ", "Bearer writer", "Bearer nobody", "reader",
               "Bearer ", "", "Basic reader"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        statuses = [(await client.get("/v1/read", headers={"Authorization": h})).status_code
                    for h in headers]
    assert statuses == [200, 200, 403, 401, 401, 401, 401, 401]
    assert [keys.allows(h, "tiers:read") for h in headers] == [s == 200 for s in statuses]


async def test_errors_raised_by_starlette_are_problems_too() -> None:
    """FastAPI answers a JSON body that is not UTF-8, and Starlette a wrong method, with
    Starlette's HTTPException (not FastAPI's subclass): found by schemathesis, they left as
    `{"detail": ...}` in application/json."""
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/items")
    async def items(body: dict[str, int]) -> None:
        return None

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        not_utf8 = await client.post("/items", content=b'{"a": "\xff"}',
                                     headers={"Content-Type": "application/json"})
        wrong_method = await client.get("/items")
    for answer, status in ((not_utf8, 400), (wrong_method, 405)):
        assert answer.status_code == status
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["status"] == status
    assert wrong_method.headers["allow"] == "POST"


ADMIN = "problems-test-admin-key-0001"
KEYS = SecretStr(json.dumps({ADMIN: ["admin"]}))
# Per service: a wrong method on one of its own routes, and the methods that route takes.
WRONG_METHOD = {"ingest": ("GET", "/v1/events", "POST"), "grader": ("POST", "/", "GET"),
                "notifier": ("DELETE", "/v1/subscriptions", "GET, POST")}


def service_app(service: str) -> FastAPI:
    """The service's real app, as its process builds it (nothing started: routing only)."""
    if service == "ingest":
        return create_ingest(IngestSettings(api_keys=KEYS))
    if service == "grader":
        return create_grader(GraderSettings(api_keys=KEYS, grader_role="api"))
    return create_notifier(NotifierSettings(api_keys=KEYS))


def assert_problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body: dict[str, Any] = answer.json()
    assert set(body) == {"type", "title", "status", "detail"}
    assert (body["type"], body["status"]) == ("about:blank", status)
    return body


@pytest.mark.parametrize("service", sorted(WRONG_METHOD))
async def test_unknown_paths_and_wrong_methods_are_problems_on_every_service(
    service: str,
) -> None:
    """The router's own 404 and 405 left as `{"type", "title", "status"}` with only the
    status's phrase: they say what was asked, and the 405's `Allow` names every method
    the path takes (Starlette's named those of the path's first route only)."""
    method, path, allowed = WRONG_METHOD[service]
    transport = httpx.ASGITransport(app=service_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                 headers={"Authorization": f"Bearer {ADMIN}"}) as client:
        nowhere = await client.get("/nowhere/at-all")
        nowhere_v1 = await client.post("/v1/nowhere", json={})
        wrong = await client.request(method, path)
        not_health = await client.delete("/healthz")
        not_document = await client.put("/openapi.json")  # a route of Starlette's own
    for answer, asked in ((nowhere, "/nowhere/at-all"), (nowhere_v1, "/v1/nowhere")):
        body = assert_problem(answer, 404)
        assert body["title"] == "Not Found"
        assert body["detail"].startswith(f"No route serves {asked}:")
    for answer, asked, allow, verb in ((wrong, path, allowed, method),
                                       (not_health, "/healthz", "GET", "DELETE"),
                                       (not_document, "/openapi.json", "GET, HEAD", "PUT")):
        body = assert_problem(answer, 405)
        assert body["title"] == "Method Not Allowed"
        assert sorted(answer.headers["allow"].split(", ")) == sorted(allow.split(", "))
        assert body["detail"] == f"{asked} answers {answer.headers['allow']}, not {verb}"


async def test_a_404_a_route_answers_keeps_its_title() -> None:
    """A 404 a route answers (the dashboard's unknown file, an unknown job) is not the
    router's: its title stays. A job id that is not a UUID is one of them, answered
    before the route takes a connection (there is no pool here: none was taken)."""
    transport = httpx.ASGITransport(app=service_app("grader"))
    async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                 headers={"Authorization": f"Bearer {ADMIN}"}) as client:
        asset = await client.get("/dashboard/nope.js")
        job = await client.get("/v1/jobs/not-a-uuid")
    assert asset.status_code == job.status_code == 404
    assert asset.headers["content-type"] == job.headers["content-type"] == PROBLEM
    assert asset.json()["title"] == "No dashboard file 'nope.js'"
    assert job.json()["title"] == "No job 'not-a-uuid': job ids are UUIDs"
