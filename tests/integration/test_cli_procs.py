"""Supervised processes and the drain on the way down, with small stand-in HTTP servers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from services.cli.procs import ServiceFailed, ServiceProcess
from services.cli.scrape import CONSUMER_LAG, read_metric
from shared.embedded import free_port
from tests.support import eventually

pytestmark = pytest.mark.integration

# Answers /readyz with 200 and /metrics with a consumer lag given on the command line.
STAND_IN = """\
import http.server, sys
lag = sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f'tierflow_grader_consumer_lag{{partition="0"}} {lag}\\n'.encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body if self.path == "/metrics" else b"ok")
    def log_message(self, *args):
        pass
print("stand-in listening", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def stand_in(tmp_path: Path, *, lag: int, name: str = "stand-in") -> ServiceProcess:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    port = free_port()
    return ServiceProcess(
        name, [sys.executable, str(script), str(port), str(lag)], {}, tmp_path / f"{name}.log",
        f"http://127.0.0.1:{port}",
    )


async def test_ready_then_stopped_with_sigterm(tmp_path: Path) -> None:
    proc = stand_in(tmp_path, lag=0)
    await proc.start()
    try:
        async with httpx.AsyncClient() as client:
            await proc.wait_ready(client, within=15, interrupted=lambda: False)
            assert await read_metric(client, proc.base_url, CONSUMER_LAG) == 0
    finally:
        await proc.stop(grace=5)
    assert not proc.alive
    assert "stand-in listening" in proc.log_path.read_text()


async def test_a_process_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    proc = ServiceProcess(
        "grader", [sys.executable, "-c", "print('boom: no database'); raise SystemExit(3)"], {},
        tmp_path / "grader.log", f"http://127.0.0.1:{free_port()}",
    )
    await proc.start()
    async with httpx.AsyncClient() as client:
        with pytest.raises(ServiceFailed) as failure:
            await proc.wait_ready(client, within=15, interrupted=lambda: False)
    assert "exit code 3" in str(failure.value)
    assert "boom: no database" in str(failure.value)


async def test_a_process_that_exits_is_started_again_and_said(tmp_path: Path) -> None:
    proc = stand_in(tmp_path, lag=0)
    await proc.start()
    stop = asyncio.Event()
    said: list[str] = []
    async with httpx.AsyncClient() as client:
        await proc.wait_ready(client, within=15, interrupted=lambda: False)
        first = proc.pid
        keeping = asyncio.create_task(proc.keep_alive(
            stop=stop, out=said.append, client=client, ready_within=15, delays=(0.1, 0.2)))
        try:
            assert first is not None
            os.kill(first, signal.SIGKILL)
            await eventually(lambda: _said(said, "stand-in is running again"), timeout=15)
            assert said[0] == (f"stand-in exited (exit code -9): starting it again in 0.1s "
                               f"(log {proc.log_path})")
            assert proc.alive and proc.pid != first and proc.restarts == 1
            # Exiting again at once waits the next, longer step.
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGKILL)
            await eventually(lambda: _said(said, "starting it again in 0.2s", count=1),
                             timeout=15)
        finally:
            stop.set()
            await proc.stop(grace=5)
            await asyncio.wait_for(keeping, 10)  # a stop ends it, without a restart
    assert not proc.alive


async def _said(said: list[str], text: str, *, count: int = 1) -> None:
    assert sum(text in line for line in said) >= count, said
