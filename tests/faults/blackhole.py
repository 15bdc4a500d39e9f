"""A TCP proxy in front of PostgreSQL that can turn into a blackhole (this module holds no
tests).

Switched, it stops forwarding in both directions but keeps every socket open, and new
connections are accepted but never reach the server: to the client and to PostgreSQL it
looks like a network that silently drops everything, with no RST and no FIN. (Their
kernels still acknowledge each other's TCP segments through the proxy, so TCP keepalive
cannot notice it; only the bounds the application sets can.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.engine import make_url


class Blackhole:
    """Forwards 127.0.0.1:<port> to the server of `upstream_url` until `swallow()`."""

    def __init__(self, upstream_url: str) -> None:
        self._upstream = make_url(upstream_url)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.swallowing = False
        self.port = 0

    @property
    def url(self) -> str:
        """The upstream URL, pointed at the proxy (over TCP)."""
        query = {k: v for k, v in self._upstream.query.items() if k != "host"}
        url = self._upstream.set(host="127.0.0.1", port=self.port, query=query)
        return url.render_as_string(hide_password=False)

    def swallow(self) -> None:
        """From now on nothing gets through, in either direction, on any connection."""
        self.swallowing = True

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        socket_dir = self._upstream.query.get("host")
        port = self._upstream.port or 5432
        if isinstance(socket_dir, str) and socket_dir.startswith("/"):
            return await asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.{port}")
        return await asyncio.open_connection(self._upstream.host, port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        if self.swallowing:  # accepted, never answered
            await self._pump(reader, None)
            return
        up_reader, up_writer = await self._open_upstream()
        self._writers.append(up_writer)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter | None) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if writer is not None and not self.swallowing:
                    writer.write(data)
                    await writer.drain()

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        finally:
            self._tasks.discard(task)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Blackhole]:
        """Listen for the duration of the block; close every socket after it."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            for writer in self._writers:
                writer.close()  # each pump then reads the end of its stream and returns
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
