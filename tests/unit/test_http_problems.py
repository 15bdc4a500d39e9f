"""Errors leave every HTTP surface as problem+json; a dependency failure is a 503."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError

from shared.http import ApiKeys, KeyGate, install_problem_handlers


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
