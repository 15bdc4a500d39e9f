"""Engine construction: one per process, built from its settings, nothing at import time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

CONNECT_TIMEOUT_S = 5.0
# A prepared upsert switched to a generic plan costed on an empty table and ran 6x slower.
SERVER_SETTINGS: Mapping[str, str] = {"plan_cache_mode": "force_custom_plan"}
# For connections that look rows up by key in batches (`= ANY($1)` with thousands of ids):
# the planner costs such a batch as a fair share of the table and scans all of it, which
# grows with the table (13 us per id at 400k rows, against 2 us by the index). Queries
# with no index to use still scan; these only take the scan off the table as a choice.
KEYED_LOOKUPS: Mapping[str, str] = {
    "enable_seqscan": "off", "enable_hashjoin": "off", "enable_mergejoin": "off",
}


def make_engine(url: str, *, pool_size: int = 5,
                settings: Mapping[str, str] | None = None) -> AsyncEngine:
    """An asyncpg-backed engine with the server settings tierflow relies on (and more)."""
    connect_args: dict[str, Any] = {"server_settings": {**SERVER_SETTINGS, **(settings or {})}}
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
        connect_args=connect_args,
    )


async def raw(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under a SQLAlchemy one, for bulk statements on the hot path."""
    fairy = await conn.get_raw_connection()
    driver = fairy.driver_connection
    assert isinstance(driver, asyncpg.Connection)  # noqa: S101 - engine is asyncpg-only
    return driver


def asyncpg_dsn(url: str) -> str:
    """`postgresql+asyncpg://...` (SQLAlchemy's form, `?host=/dir` kept) as a plain libpq DSN."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def connect(url: str, *, settings: Mapping[str, str] | None = None,
                  ) -> asyncpg.Connection:
    """A connection outside any pool, for a loop that owns its session (the grader's
    consumer, the notifier's relay with its advisory lock)."""
    conn: asyncpg.Connection = await asyncpg.connect(
        asyncpg_dsn(url), timeout=CONNECT_TIMEOUT_S,
        server_settings={**SERVER_SETTINGS, **(settings or {})},
    )
    return conn
