"""/readyz answers within its bound, whatever a check does."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from shared.http import health_router


async def test_a_check_that_hangs_is_false_within_the_bound() -> None:
    never = asyncio.Event()
    running: list[str] = []
    most_at_once = 0

    async def stuck() -> bool:
        nonlocal most_at_once
        running.append("stuck")
        most_at_once = max(most_at_once, len(running))
        try:
            await never.wait()
        finally:
            running.pop()
        return True

    async def fine() -> bool:
        return True

    app = FastAPI()
    app.include_router(health_router(CollectorRegistry(), {"stuck": stuck, "fine": fine},
                                     timeout_s=0.2))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        async with asyncio.timeout(5):  # without the bound, it never answers
            answers = [await client.get("/readyz") for _ in range(2)]
    for answer in answers:
        assert answer.status_code == 503
        assert answer.json() == {"ready": False, "checks": {"stuck": False, "fine": True}}
    assert most_at_once == 1  # late checks do not pile up
    assert not never.is_set()
