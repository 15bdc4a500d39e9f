"""A dedicated asyncpg connection for the relay: it holds the leader lock and does the work."""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import make_url

from shared.db.engine import SERVER_SETTINGS

CONNECT_TIMEOUT_S = 5.0


def asyncpg_dsn(url: str) -> str:
    """`postgresql+asyncpg://...` (SQLAlchemy's form, `?host=/dir` kept) as a plain libpq DSN."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def connect(url: str) -> asyncpg.Connection:
    """A connection outside any pool, so its session (and advisory lock) is ours alone."""
    conn: asyncpg.Connection = await asyncpg.connect(
        asyncpg_dsn(url), timeout=CONNECT_TIMEOUT_S, server_settings=dict(SERVER_SETTINGS)
    )
    return conn
