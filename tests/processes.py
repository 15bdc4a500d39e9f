"""Running tierflow services as real subprocesses, for the e2e and fault tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support import eventually


class Service:
    """One `python -m services.<name>` process with its own environment and log file."""

    def __init__(self, name: str, env: dict[str, str], *, port: int, log_dir: Path) -> None:
        self.name = name
        self.env = {**os.environ, **env}
        self.port = port
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of its HTTP server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Launch it (returns at once; wait with `ready`)."""
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}"], env=self.env,
                stdout=log, stderr=subprocess.STDOUT,
            )

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until /readyz answers 200, failing with the log if the process died."""

        async def check() -> None:
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            async with httpx.AsyncClient() as client:
                try:
                    response = await client.get(f"{self.url}/readyz", timeout=2)
                except httpx.TransportError as exc:
                    raise AssertionError(f"{self.name} not answering: {exc}") from exc
            assert response.status_code == 200, response.text

        await eventually(check, timeout=timeout, interval=0.2)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after the deadline."""
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.terminate()
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # bounded wait for a process to exit
        self.kill()

    def log_tail(self, lines: int = 40) -> str:
        """The end of its log, for failure messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
