"""A TCP proxy the fault tests put between a service and its server, to make the network
misbehave on demand (this module holds no tests). tc and iptables are not at hand.

- `blackhole()`: nothing gets through, in either direction, on any connection, and new
  connections are accepted but never reach the server: to both ends it looks like a
  network that silently drops everything, with no RST and no FIN. What was sent meanwhile
  is held, not dropped, as TCP would retransmit it: after `forward()` it arrives, in order.
  (The two kernels still acknowledge each other's segments through the proxy, so TCP
  keepalive cannot notice it; only the bounds the application sets can.)
- `hold_replies()`: the same for what the server sends only: what the client sends
  still arrives (a one-way partition). A server that answers with more than the socket
  buffers hold is then stuck writing, the case where its own timeouts do not act.
- `reset()`: every connection closed with an RST at both ends, and new ones refused
  (nothing listens) until `forward()`.
- `delay(s)`: every byte read from now on is delivered `s` seconds later, each way.
- `forward()`: pass everything again.

`Proxy` forwards to any upstream; `Blackhole` is one in front of PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy.engine import make_url

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Opener = Callable[[], Awaitable[Streams]]
CHUNK = 65536
# Chunks read ahead of delivery, per direction: enough to keep a delayed link full, and a
# bound so a stalled end pushes back on the other.
QUEUED_CHUNKS = 256


def tcp(host: str, port: int) -> Opener:
    """The opener of a TCP upstream."""
    return lambda: asyncio.open_connection(host, port)


class Proxy:
    """Forwards 127.0.0.1:`port` (any free port by default) to what `open_upstream` opens
    for each connection, until told to misbehave."""

    def __init__(self, open_upstream: Opener, *, port: int = 0) -> None:
        self._open_upstream = open_upstream
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Whether bytes move towards the server (`_up`) and towards the client (`_down`).
        self._up, self._down = asyncio.Event(), asyncio.Event()
        self._up.set()
        self._down.set()
        self.delay_s = 0.0
        self.port = port
        self.delayed = 0  # chunks read while a delay was set

    @property
    def address(self) -> str:
        """`host:port` to connect to."""
        return f"127.0.0.1:{self.port}"

    @property
    def open_sockets(self) -> int:
        """Sockets open through the proxy, both ends of each connection."""
        return len(self._writers)

    def blackhole(self) -> None:
        """From now on nothing gets through, in either direction, on any connection."""
        self._up.clear()
        self._down.clear()

    def hold_replies(self) -> None:
        """From now on nothing gets from the server to the client; the other way flows."""
        self._down.clear()

    def delay(self, seconds: float) -> None:
        """Deliver what is read from now on `seconds` later, in both directions."""
        self.delay_s = seconds

    async def reset(self) -> int:
        """Refuse new connections and close every open one with an RST; how many there
        were (the client's and the server's side of a connection count as two)."""
        if self._server is not None:
            self._server.close()  # nothing listens: a connect gets ECONNREFUSED
            self._server = None
        writers = list(self._writers)
        for writer in writers:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # Linger on, timeout 0: close() sends an RST instead of a FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        return len(writers)

    async def forward(self) -> None:
        """Pass everything again: listen if `reset()` stopped it, no delay, and what a
        blackhole held goes on its way."""
        self.delay_s = 0.0
        if self._server is None:
            await self._listen()
        self._up.set()
        self._down.set()

    def swallow(self) -> None:
        """`blackhole()`, under the name the database tests use."""
        self.blackhole()

    async def _listen(self) -> None:
        # SO_REUSEADDR (asyncio's default here) lets the port be taken again after reset().
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            await self._up.wait()  # during a blackhole: accepted, never answered
            up_reader, upstream = await self._open_upstream()
            self._writers.add(upstream)
            await asyncio.gather(
                self._pipe(reader, upstream, self._up), self._pipe(up_reader, writer, self._down)
            )
        except (ConnectionError, OSError):
            pass  # the upstream refused or went away: the client's side is closed below
        except asyncio.CancelledError:
            # running() is over. Ending as cancelled would make asyncio's stream server
            # log the handler's "exception" (Python 3.11).
            pass
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._writers.discard(end)
                    end.close()
            self._tasks.discard(task)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    flowing: asyncio.Event) -> None:
        """One direction, in order: read, hold while `flowing` is clear, deliver `delay_s`
        after it was read; the end of `source` closes `sink`."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED_CHUNKS)
        reading = asyncio.create_task(self._read(source, queue, flowing))
        try:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(due - loop.time())  # at once when due already
                await flowing.wait()
                if not data:
                    break
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            reading.cancel()
            sink.close()

    async def _read(self, source: asyncio.StreamReader,
                    queue: asyncio.Queue[tuple[float, bytes]], flowing: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await flowing.wait()  # a blackhole reads nothing: the sender's buffers fill
                data = await source.read(CHUNK)
                self.delayed += bool(data and self.delay_s)
                await queue.put((loop.time() + self.delay_s, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((0.0, b""))  # an end reset: close the other side

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Proxy]:
        """Listen for the duration of the block; close every socket after it."""
        await self._listen()
        try:
            yield self
        finally:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()  # each closes its sockets on the way out
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()


class Blackhole(Proxy):
    """A proxy in front of the PostgreSQL server of `upstream_url`."""

    def __init__(self, upstream_url: str) -> None:
        self._upstream = make_url(upstream_url)
        super().__init__(self._open_postgres)

    @property
    def url(self) -> str:
        """The upstream URL, pointed at the proxy (over TCP)."""
        query = {k: v for k, v in self._upstream.query.items() if k != "host"}
        url = self._upstream.set(host="127.0.0.1", port=self.port, query=query)
        return url.render_as_string(hide_password=False)

    async def _open_postgres(self) -> Streams:
        socket_dir = self._upstream.query.get("host")
        port = self._upstream.port or 5432
        if isinstance(socket_dir, str) and socket_dir.startswith("/"):
            return await asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.{port}")
        return await asyncio.open_connection(self._upstream.host, port)
