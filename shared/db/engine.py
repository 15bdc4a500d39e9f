"""Engine construction: one per process, built from its settings, nothing at import time.

Every database wait is bounded. A connection has a `Timeouts`: how long to connect, how
long any command may take (asyncpg's `command_timeout`, which also bounds a cancel and a
graceful close; the server's `statement_timeout` is the same), and how long either side
waits on a silent peer (TCP keepalive and `TCP_USER_TIMEOUT`, set on our socket and, as
the `tcp_*` settings, on the server's). Without them a blackholed connection waited
about 15 minutes (the kernel's retransmissions) on our side, and the server kept a dead
session, with its locks, for hours (keepalive at 2 h).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shared.settings import CommonSettings

# A prepared upsert switched to a generic plan costed on an empty table and ran 6x slower.
SERVER_SETTINGS: Mapping[str, str] = {"plan_cache_mode": "force_custom_plan"}
# For connections that look rows up by key in batches (`= ANY($1)` with thousands of ids):
# the planner costs such a batch as a fair share of the table and scans all of it, which
# grows with the table (13 us per id at 400k rows, against 2 us by the index). Queries
# with no index to use still scan; these only take the scan off the table as a choice.
KEYED_LOOKUPS: Mapping[str, str] = {
    "enable_seqscan": "off", "enable_hashjoin": "off", "enable_mergejoin": "off",
}
KEEPALIVE_PROBES = 5


@dataclass(frozen=True)
class Timeouts:
    """How long each database wait may take on one kind of connection."""

    connect_s: float = 10.0
    # Any one command, on the client and (as statement_timeout) on the server; None only
    # for migrations, whose DDL may rightly take long. Also the longest a transaction may
    # sit idle before the server ends the session (and releases what it locked).
    query_s: float | None = 30.0
    # A peer that acknowledges nothing for this long is dead, on either side.
    dead_peer_s: int = 30
    # The server ends a session idle (between transactions) longer than this: a lease for
    # a session lock (the relay's), which then passes on even if TCP never says the
    # holder is gone.
    idle_session_s: float | None = None

    @classmethod
    def of(cls, settings: CommonSettings, *, query_s: float | None = None) -> Timeouts:
        """The settings' bounds; `query_s` for a connection role with its own."""
        return cls(connect_s=settings.db_connect_timeout_s,
                   query_s=query_s or settings.db_query_timeout_s,
                   dead_peer_s=settings.db_dead_peer_s)

    def keepalive(self) -> tuple[int, int, int]:
        """(idle, interval, count) in seconds, adding up to about `dead_peer_s`."""
        interval = max(1, self.dead_peer_s // (2 * KEEPALIVE_PROBES))
        return max(1, self.dead_peer_s - KEEPALIVE_PROBES * interval), interval, \
            KEEPALIVE_PROBES

    def server_settings(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """What the server is told at connect, so it bounds its side too."""
        idle, interval, count = self.keepalive()
        settings = {
            **SERVER_SETTINGS,
            "tcp_keepalives_idle": str(idle), "tcp_keepalives_interval": str(interval),
            "tcp_keepalives_count": str(count),
            "tcp_user_timeout": str(self.dead_peer_s * 1000),
            "statement_timeout": _ms(self.query_s),
            "idle_in_transaction_session_timeout": _ms(self.query_s),
        }
        if self.idle_session_s is not None:
            settings["idle_session_timeout"] = _ms(self.idle_session_s)
        return {**settings, **(extra or {})}

    def connect_kwargs(self, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
        """asyncpg's connect arguments for these bounds."""
        return {"timeout": self.connect_s, "command_timeout": self.query_s,
                "server_settings": self.server_settings(extra)}

    def lease(self, seconds: float) -> Timeouts:
        """The same with a server-side idle lease of `seconds`."""
        return replace(self, idle_session_s=seconds)


# Migrations, tests and tools: bounded connects and dead-peer detection, but no command
# timeout (DDL and bulk loads may rightly take long). The services name their own.
TOOLS = Timeouts(query_s=None)


def _ms(seconds: float | None) -> str:
    return "0" if seconds is None else str(max(1, round(seconds * 1000)))


def watch_peer(conn: asyncpg.Connection, timeouts: Timeouts) -> None:
    """Set TCP keepalive and TCP_USER_TIMEOUT on the connection's socket, so a dead server
    is noticed even while we wait on a long command (unix sockets need none of it)."""
    # asyncpg exposes no API for its socket; its transport is the way in.
    sock = conn._transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    idle, interval, count = timeouts.keepalive()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeouts.dead_peer_s * 1000)


def make_engine(url: str, *, pool_size: int = 5, settings: Mapping[str, str] | None = None,
                timeouts: Timeouts = TOOLS) -> AsyncEngine:
    """An asyncpg-backed engine with the server settings tierflow relies on (and more)."""
    engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
        pool_timeout=timeouts.query_s or timeouts.connect_s,
        connect_args=timeouts.connect_kwargs(settings),
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _connected(dbapi_connection: Any, _: Any) -> None:
        watch_peer(dbapi_connection.driver_connection, timeouts)

    return engine


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
                  timeouts: Timeouts = TOOLS) -> asyncpg.Connection:
    """A connection outside any pool, for a loop that owns its session (the grader's
    consumer, the notifier's relay with its advisory lock)."""
    conn: asyncpg.Connection = await asyncpg.connect(
        asyncpg_dsn(url), **timeouts.connect_kwargs(settings))
    watch_peer(conn, timeouts)
    return conn


async def close(conn: asyncpg.Connection) -> None:
    """Close gracefully within the connection's command timeout; a connection that does
    not answer in time is aborted (asyncpg then raises, which is of no use here)."""
    try:
        await conn.close()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()


class Pool(asyncpg.Pool):  # type: ignore[misc]
    """asyncpg's pool, where waiting for a connection is bounded even when the caller
    names no timeout (by the connections' command timeout)."""

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        """A connection within `timeout` (by default the pool's bound)."""
        return super().acquire(timeout=self._acquire_timeout if timeout is None else timeout)


async def create_pool(
    url: str, timeouts: Timeouts, *, min_size: int, max_size: int,
    settings: Mapping[str, str] | None = None,
    reset: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> Pool:
    """A pool of connections with these bounds."""

    async def init(conn: asyncpg.Connection) -> None:
        watch_peer(conn, timeouts)

    pool = Pool(
        asyncpg_dsn(url), acquire_timeout=timeouts.query_s or timeouts.connect_s,
        min_size=min_size, max_size=max_size, max_queries=50_000,
        max_inactive_connection_lifetime=300.0, init=init, reset=reset, loop=None,
        connection_class=asyncpg.Connection, record_class=asyncpg.Record,
        **timeouts.connect_kwargs(settings),
    )
    await pool
    return pool
