"""`tierflow up` as a user runs it: a grader consumer and the broker killed under it are
started again, and Ctrl-C right after 20,000 accepted events still grades every one."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from shared.db.engine import make_engine
from shared.embedded import EmbeddedPostgres, free_port
from tests.support import SESSION_TIMEOUT_MS, applied_events, eventually, unique

pytestmark = pytest.mark.e2e

EVENTS = 20_000
BATCH = 1_000


@dataclass
class Up:
    """A running `tierflow up` and everything it printed."""

    proc: asyncio.subprocess.Process
    ingest: str
    said: list[str] = field(default_factory=list)

    async def read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.said.append(line.decode().rstrip())

    async def saw(self, text: str, *, count: int = 1) -> None:
        assert sum(text in line for line in self.said) >= count, "\n".join(self.said[-30:])

    def child(self, *, cmdline: str, role: str | None = None) -> psutil.Process:
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            if cmdline in " ".join(child.cmdline()) and (
                    role is None or child.environ().get("TIERFLOW_GRADER_ROLE") == role):
                return child
        raise AssertionError(f"no child process runs {cmdline!r}")


@pytest.fixture
def data_dir() -> AsyncIterator[Path]:
    """Outside pytest's temp root (PostgreSQL runs as an unprivileged user when we are root)."""
    path = Path(tempfile.mkdtemp(prefix="tierflow-up-fault-"))
    yield path / "tf"
    shutil.rmtree(path, ignore_errors=True)


async def start_up(data_dir: Path) -> Up:
    ingest = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    env.update({
        "TIERFLOW_INGEST_PORT": str(ingest), "TIERFLOW_GRADER_PORT": str(free_port()),
        "TIERFLOW_NOTIFIER_PORT": str(free_port()), "TIERFLOW_GRADER_CONSUMERS": "1",
        "TIERFLOW_GRADER_CONSUMER_PORT": str(free_port()),
        "TIERFLOW_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
    })
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from services.cli import main; raise SystemExit(main())", "up",
        "--data-dir", str(data_dir), env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    return Up(proc, f"http://127.0.0.1:{ingest}")


def purchases(count: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    run = unique("up")
    return [{"event_id": f"{run}-{i}", "type": "purchase", "customer_id": f"{run}-c{i % 2_000}",
             "occurred_at": now, "source": "pos",
             "data": {"amount": "10.00", "currency": "CNY", "category": "books"}}
            for i in range(count)]


async def post_all(client: httpx.AsyncClient, url: str, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), BATCH):
        answer = await client.post(f"{url}/v1/events/batch",
                                   json={"events": events[start:start + BATCH]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == len(events[start:start + BATCH]), answer.text


async def graded(data_dir: Path, events: list[dict[str, Any]]) -> int:
    """How many of `events` the grader applied (remembered in its dedupe table)."""
    server = EmbeddedPostgres(data_dir / "pg")
    engine = make_engine(await asyncio.to_thread(server.start), pool_size=1)
    try:
        async with engine.connect() as conn:
            return await applied_events(conn, events)
    finally:
        await engine.dispose()
        await asyncio.to_thread(server.stop)


async def test_restarts_what_dies_and_grades_everything_accepted_before_ctrl_c(
    data_dir: Path
) -> None:
    up = await start_up(data_dir)
    reader = asyncio.create_task(up.read())
    try:
        await eventually(lambda: up.saw("tierflow subscriptions listen"), timeout=120)
        key = (data_dir / "api-key").read_text().strip()
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"},
                                     timeout=30) as client:
            up.child(cmdline="services.grader", role="consumer").kill()
            await eventually(lambda: up.saw("grader-consumer-1 is running again"), timeout=60)
            await up.saw("grader-consumer-1 exited (exit code -9): starting it again in 1s")

            up.child(cmdline="tansu").kill()
            await eventually(lambda: up.saw("the broker is running again"), timeout=60)

            async def accepted_again() -> None:  # ingest reconnects to the new broker
                await post_all(client, up.ingest, purchases(1))

            await eventually(accepted_again, timeout=60, interval=0.5)

            events = purchases(EVENTS)
            await post_all(client, up.ingest, events)
        up.proc.send_signal(signal.SIGINT)  # at once: most of them are not graded yet
        assert await asyncio.wait_for(up.proc.wait(), 120) == 0, "\n".join(up.said)
    finally:
        if up.proc.returncode is None:
            up.proc.kill()
            await up.proc.wait()
        await reader
    assert any(line.startswith("drained: every accepted event is graded")
               for line in up.said), "\n".join(up.said)
    assert await graded(data_dir, events) == EVENTS
