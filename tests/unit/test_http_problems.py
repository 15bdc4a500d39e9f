"""Errors leave every HTTP surface as problem+json; a dependency failure is a 503."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError

from shared.http import install_problem_handlers


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
