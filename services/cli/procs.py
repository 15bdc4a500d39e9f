"""One supervised child process: started with a log file, polled until ready, stopped politely."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from services.cli.config import CliError, Interrupted

# Waits before starting a crashed process again, one more step per exit in a row.
RESTART_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
HEALTHY_AFTER_S = 60.0


async def _stopped_within(seconds: float, stop: asyncio.Event) -> bool:
    """Wait `seconds` unless a stop comes first (then True at once)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


class ServiceFailed(CliError):
    """A supervised process exited or never became ready."""


@dataclass
class ServiceProcess:
    """A child such as `python -m services.grader`, its log in `log_path`."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    log_path: Path
    base_url: str
    restarts: int = 0  # how often keep_alive started it again
    _proc: asyncio.subprocess.Process | None = field(default=None, repr=False)

    async def start(self) -> None:
        """Spawn the process in its own session, so a terminal Ctrl-C reaches only us."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"--- tierflow up: starting {self.name} at {stamp}\n".encode())
            log.flush()
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The process id once started."""
        return self._proc.pid if self._proc else None

    async def exited(self) -> int:
        """Wait for the process to end; its exit code."""
        if self._proc is None:
            raise CliError(f"{self.name} was never started")
        return await self._proc.wait()

    async def wait_ready(
        self, client: httpx.AsyncClient, *, within: float, interrupted: Callable[[], bool]
    ) -> None:
        """Poll /readyz until 200; fail with the log's tail if it dies or the deadline passes."""
        deadline = time.monotonic() + within
        while True:
            if interrupted():
                raise Interrupted
            if not self.alive:
                raise ServiceFailed(self.failure_report("exited during start-up"))
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(f"{self.base_url}/readyz", timeout=2.0)
                if response.status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise ServiceFailed(self.failure_report(f"not ready after {within:.0f}s"))
            await asyncio.sleep(0.2)  # polling interval of a deadline-bounded wait

    async def stop(self, *, grace: float) -> None:
        """SIGTERM, then SIGKILL if it has not exited by the deadline."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def keep_alive(
        self, *, stop: asyncio.Event, out: Callable[[str], None],
        client: httpx.AsyncClient, ready_within: float,
        delays: Sequence[float] = RESTART_DELAYS_S, healthy_after: float = HEALTHY_AFTER_S,
    ) -> None:
        """Start it again whenever it exits, waiting longer after each exit in a row (the
        count starts over once it stayed up `healthy_after` seconds). Returns once `stop`
        is set when it exits; never raises for a crash, says it instead."""
        exits_in_a_row = 0
        while True:
            started = time.monotonic()
            code = await self.exited()
            if stop.is_set():
                return
            if time.monotonic() - started >= healthy_after:
                exits_in_a_row = 0
            delay = delays[min(exits_in_a_row, len(delays) - 1)]
            exits_in_a_row += 1
            self.restarts += 1
            out(f"{self.name} exited (exit code {code}): starting it again in {delay:g}s "
                f"(log {self.log_path})")
            if await _stopped_within(delay, stop):
                return
            await self.start()
            try:
                await self.wait_ready(client, within=ready_within, interrupted=stop.is_set)
            except (ServiceFailed, Interrupted):
                continue  # exited again (counted above at the next turn), or stopping
            out(f"{self.name} is running again")

    def failure_report(self, what: str) -> str:
        """`name what (exit code)` and the last lines of its log."""
        code = self._proc.returncode if self._proc else None
        status = f" (exit code {code})" if code is not None else ""
        tail = "\n".join(f"  | {line}" for line in log_tail(self.log_path))
        return f"{self.name} {what}{status}; log {self.log_path}:\n{tail}"


def log_tail(path: Path, *, lines: int = 20, max_bytes: int = 16_384) -> list[str]:
    """The last `lines` lines of a log file (empty if it does not exist)."""
    try:
        with path.open("rb") as log:
            log.seek(0, 2)
            size = log.tell()
            log.seek(max(0, size - max_bytes))
            data = log.read()
    except FileNotFoundError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-lines:]
