"""Helpers shared by the test tiers: deadlines instead of sleeps, unique names."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from services.grader import repository as repo
from shared.db.engine import asyncpg_dsn
from shared.db.migrate import upgrade

T = TypeVar("T")

# The consumers' session timeout in tests: short, because the broker answers a group join
# after about half of it and a member that died is only replaced once it runs out. The
# fault scenarios' pauses are measured in it.
SESSION_TIMEOUT_MS = 3000


def unique(prefix: str) -> str:
    """A name no other test uses: topics, groups, customer and event ids."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Call `check` until it returns without AssertionError, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)  # polling interval of a deadline-bounded wait


@contextlib.asynccontextmanager
async def migrated_database(pg_url: str, prefix: str) -> AsyncIterator[str]:
    """A new database on the server of `pg_url`, with the schema at head; dropped after.
    For tests that count something over the whole database (the outbox) or fill it."""
    name = unique(prefix).replace("-", "_")
    admin = await asyncpg.connect(asyncpg_dsn(pg_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    try:
        await upgrade(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def applied_events(conn: AsyncConnection, events: list[dict[str, Any]]) -> int:
    """How many of `events` the grader has applied: its dedupe table holds each under a
    key salted per customer (services/grader/repository.py `event_key`)."""
    customers = sorted({e["customer_id"] for e in events})
    rows = (await conn.execute(
        text("SELECT customer_id, state FROM customers WHERE customer_id = ANY(:ids)"),
        {"ids": customers})).all()
    salts = {row[0]: repo.stored_salt(row[1]) for row in rows}
    keys = [uuid.UUID(repo.event_key(e["event_id"], salts[e["customer_id"]]))
            for e in events if e["customer_id"] in salts]
    found = await conn.scalar(
        text("SELECT count(*) FROM processed_events WHERE event_hash = ANY(:ids)"),
        {"ids": keys})
    return int(found or 0)
