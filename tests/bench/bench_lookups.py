"""Lookups alone: the grader API (role `api`) over 1,000 stored customers, under wrk.

Run: `.venv/bin/python -m tests.bench.bench_lookups [--workers N] [--seconds S]
[--connections C] [--profile PATH]`. Needs `wrk` (Debian: `apt-get install wrk`). Starts an
embedded PostgreSQL; prints wrk's figures (it is not a test). `--profile` runs the API
under cProfile (a single worker) and prints its hottest functions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from services.grader import repository as repo
from services.grader.grading.customer import CustomerState, fold, grade_customer
from services.grader.grading.policy import ActivePolicy, default_policy_document
from shared.db.engine import connect
from shared.db.migrate import upgrade
from shared.embedded import EmbeddedPostgres, free_port
from tests.unit.factories import purchase

KEY = "bench-lookups-key-000001"
CUSTOMERS = 1000


async def seed(url: str) -> None:
    """The schema, the default policy, and CUSTOMERS graded customers."""
    await upgrade(url)
    conn = await connect(url)
    now = datetime.now(UTC)
    active = ActivePolicy.from_document(1, default_policy_document())
    await repo.insert_policy(conn, default_policy_document())
    states = []
    for i in range(CUSTOMERS):
        state = fold(CustomerState(f"c-{i}"), [purchase("10.00", now.isoformat())])
        grade_customer(state, active, now=now, today=now.date(), reason="event")
        states.append((0, state))
    checkpoint = repo.Checkpoint.build(topic="bench", advances=[], event_keys=[], renewed=[],
                                       customers=states, changes=[], now=now)
    await repo.prepare(conn)
    await repo.write_checkpoint(conn, checkpoint)
    await conn.close()


def serve(url: str, port: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """The API process, ready."""
    env = {**os.environ, "TIERFLOW_DATABASE_URL": url, "TIERFLOW_GRADER_ROLE": "api",
           "TIERFLOW_GRADER_PORT": str(port), "TIERFLOW_LOG_LEVEL": "WARNING",
           "TIERFLOW_API_KEYS": json.dumps({KEY: ["admin"]}),
           "TIERFLOW_GRADER_API_WORKERS": str(args.workers)}
    profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    proc = subprocess.Popen([sys.executable, *profile, "-m", "services.grader"], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)  # polling interval of a deadline-bounded wait
    proc.kill()
    raise TimeoutError("the API did not become ready")


def load(port: int, tmp: Path, args: argparse.Namespace) -> str:
    """wrk's report for GET /v1/customers/{random id}."""
    script = tmp / "lookups.lua"
    script.write_text(
        'request = function() return wrk.format("GET", "/v1/customers/c-" .. '
        f'math.random(0, {CUSTOMERS - 1}), {{["Authorization"] = "Bearer {KEY}"}}) end\n')
    command = ["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "--latency",
               "-s", str(script), f"http://127.0.0.1:{port}"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def main() -> None:
    """Seed, serve, load, report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--profile", default="")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="tierflow-bench-lookups-"))
    tmp.chmod(0o755)  # the embedded PostgreSQL runs as another user when we are root
    server = EmbeddedPostgres(tmp / "pg")
    url = server.start()
    try:
        asyncio.run(seed(url))
        port = free_port()
        proc = serve(url, port, args)
        try:
            print(f"GET /v1/customers/{{id}}, {args.connections} connections, "
                  f"{args.workers} API worker(s), {os.cpu_count()} cpus:")
            print(load(port, tmp, args))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.profile:
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
