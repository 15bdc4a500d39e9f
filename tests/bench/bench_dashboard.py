"""The dashboard's data over 1,000,000 stored customers: how long its routes take.

The customers are stored as bench_policy stores them (16 kinds of history, graded under
the default policy), with a tier change each; then the grader API (in this process)
answers `GET /v1/dashboard/summary` (first uncached, then from its 30-second cache),
`GET /v1/dashboard/scatter` and a customer's lookup, explain and history, each several
times. Printed: the median and the slowest of each. Figures, not timed tests:

    .venv/bin/python -m tests.bench.bench_dashboard [--customers 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import UTC, datetime

import httpx
import orjson
from pydantic import SecretStr

from services.grader.app import create_app
from shared.db.engine import connect
from shared.db.migrate import upgrade
from tests.bench.bench_grader import run_settings, run_with_servers
from tests.bench.bench_policy import store

KEY = "bench-dashboard-key-0001"
RUNS = 7


async def add_changes(db_url: str, tag: str, count: int) -> None:
    """A first-grading tier change per customer on the `tier` ladder, today."""
    conn = await connect(db_url)
    try:
        started = time.perf_counter()
        now = datetime.now(UTC)
        rows = [(str(uuid.uuid4()), f"p{tag}-{i}", "tier", 1, "tier.changed",
                 orjson.dumps({"type": "tier.changed", "direction": "initial",
                               "customer_id": f"p{tag}-{i}", "ladder": "tier"}).decode(), now)
                for i in range(count)]
        await conn.copy_records_to_table(
            "tier_changes", columns=("message_id", "customer_id", "ladder", "sequence", "kind",
                                     "payload", "created_at"), records=rows)
        await conn.execute("ANALYZE tier_changes")
        print(f"stored {count:,} tier changes in {time.perf_counter() - started:.1f}s",
              flush=True)
    finally:
        await conn.close()


async def timed(client: httpx.AsyncClient, path: str) -> float:
    """Seconds for one GET that must answer 200."""
    started = time.perf_counter()
    response = await client.get(path)
    seconds = time.perf_counter() - started
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    return seconds


def report(name: str, seconds: list[float]) -> None:
    print(f"  {name:<44} median {statistics.median(seconds) * 1000:8.1f} ms, "
          f"slowest {max(seconds) * 1000:8.1f} ms ({len(seconds)} runs)", flush=True)


async def bench(db_url: str, bootstrap: str, args: argparse.Namespace) -> None:
    """Store, then time the routes."""
    await upgrade(db_url)
    tag = uuid.uuid4().hex[:6]
    await store(db_url, args.customers, tag)
    await add_changes(db_url, tag, args.customers)
    settings = run_settings(db_url, bootstrap, tag, grader_role="api",
                            api_keys=SecretStr(orjson.dumps({KEY: ["tiers:read"]}).decode()))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://grader",
                                     headers={"Authorization": f"Bearer {KEY}"},
                                     timeout=120) as client:
            grader = app.state.grader
            uncached = []
            for _ in range(3):
                grader.dashboard.value = {}  # as on the first request of a new process
                uncached.append(await timed(client, "/v1/dashboard/summary"))
            report("summary, first request (counts + 30 days of changes)", uncached)
            report("summary, from the cache",
                   [await timed(client, "/v1/dashboard/summary") for _ in range(RUNS)])
            grader.dashboard.made = 0.0  # older than 30 seconds
            stale = await timed(client, "/v1/dashboard/summary")
            assert grader.dashboard.refreshing is not None
            started = time.perf_counter()
            await grader.dashboard.refreshing
            report("summary, stale (answered, refreshed behind)", [stale])
            report("  (the refresh behind it)", [time.perf_counter() - started])
            report("scatter, 2,000 sampled",
                   [await timed(client, "/v1/dashboard/scatter") for _ in range(RUNS)])
            report("scatter, 5,000 sampled",
                   [await timed(client, "/v1/dashboard/scatter?limit=5000")
                    for _ in range(RUNS)])
            sampled = (await client.get("/v1/dashboard/scatter")).json()
            print(f"  (the sample held {sampled['sampled']:,} of "
                  f"{sampled['customers']:,} customers)")
            for suffix in ("", "/explain", "/history"):
                report(f"customer{suffix or ' lookup'}",
                       [await timed(client,
                                    f"/v1/customers/p{tag}-{i * 7919 % args.customers}{suffix}")
                        for i in range(RUNS)])


def main() -> None:
    """Start or find the servers and run."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    run_with_servers(bench, parser.parse_args())


if __name__ == "__main__":
    main()
