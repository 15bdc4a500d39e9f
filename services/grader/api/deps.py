"""What routes need, reached through `request.app.state` (set once in create_app)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from services.grader.policies import PolicyCache
from services.grader.telemetry import GraderMetrics
from shared.db.engine import raw
from shared.settings import GraderSettings


@dataclass
class Grader:
    """The grader's wiring, built by the composition root."""

    settings: GraderSettings
    engine: AsyncEngine
    policies: PolicyCache
    metrics: GraderMetrics
    serves_api: bool


def get_grader(request: Request) -> Grader:
    """The grader of this app."""
    grader: Grader = request.app.state.grader
    return grader


async def get_conn(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for one request, returned however the request ends."""
    async with get_grader(request).engine.connect() as sa_conn:
        yield await raw(sa_conn)


GraderDep = Annotated[Grader, Depends(get_grader)]
ConnDep = Annotated[asyncpg.Connection, Depends(get_conn)]
