"""What routes need, reached through `request.app.state` (set once in create_app)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import asyncpg
from fastapi import Depends, Request

from services.grader.api.loader import CustomerLoader

if TYPE_CHECKING:
    from services.grader.api.writes import ControlSender
from services.grader.policies import PolicyCache
from services.grader.telemetry import GraderMetrics
from shared.settings import GraderSettings


@dataclass
class SummaryCache:
    """The dashboard's last summary, the policy version it was made under, and when."""

    made: float = 0.0
    version: int = 0
    value: dict[str, Any] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    refreshing: asyncio.Task[None] | None = None


@dataclass
class Grader:
    """The grader's wiring, built by the composition root."""

    settings: GraderSettings
    policies: PolicyCache
    metrics: GraderMetrics
    serves_api: bool
    pool: asyncpg.Pool | None = None  # asyncpg pools bind to a loop: made when it runs
    loader: CustomerLoader | None = None  # single lookups, over the pool
    simulations: asyncio.Lock = field(default_factory=asyncio.Lock)  # one what-if at a time
    controls: ControlSender | None = None  # overrides and erasure, to the owners
    dashboard: SummaryCache = field(default_factory=SummaryCache)


async def get_grader(request: Request) -> Grader:
    """The grader of this app. (Async: FastAPI runs a plain `def` dependency in a thread,
    which cost more than a lookup.)"""
    grader: Grader = request.app.state.grader
    return grader


async def get_conn(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for one request, returned however the request ends."""
    pool = (await get_grader(request)).pool
    assert pool is not None  # noqa: S101 - the lifespan made it before serving
    async with pool.acquire() as conn:
        yield conn


GraderDep = Annotated[Grader, Depends(get_grader)]
ConnDep = Annotated[asyncpg.Connection, Depends(get_conn)]
