"""A policy change over 1,000,000 stored customers: simulate it, then apply it.

The customers are stored directly (16 kinds of purchase history, graded under the default
policy), then a candidate policy (vip from 20,000, important from 12,000, and a new
ladder) is simulated with `TIERFLOW_SIMULATE_WORKERS` processes, and stored as a new
version with its job, which `--consumers` grader processes (as `tierflow up` runs them)
apply. Printed: seconds and customers/s for both, and whether the simulated transitions
equal the applied ones. Figures, not timed tests:

    .venv/bin/python -m tests.bench.bench_policy [--customers 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from services.grader import jobs
from services.grader import repository as repo
from services.grader.grading.aggregates import apply
from services.grader.grading.customer import CustomerState, grade_customer
from services.grader.grading.policy import ActivePolicy, default_policy_document
from services.grader.policies import PolicyCache
from services.grader.routing import owner_partition
from services.grader.simulate import simulate
from shared.db.engine import connect
from shared.db.migrate import upgrade
from shared.events import parse_event_obj
from shared.kafka import ensure_topics
from tests.bench.bench_grader import PARTITIONS, run_settings, run_with_servers
from tests.bench.processes import GraderProcesses, cpu_report, cpu_seconds

NOW = datetime.now(UTC)
TODAY = NOW.date()


def candidate() -> dict[str, Any]:
    """The default policy with vip from 20,000 (6 orders), important from 12,000 (and
    staying from 10,000), and a ladder on the average order."""
    doc = copy.deepcopy(default_policy_document())
    tier = doc["ladders"][0]["tiers"]
    tier[0]["when"]["all"][0]["value"] = 20000
    tier[0]["when"]["all"][1]["value"] = 6
    tier[1]["when"]["any"][0]["value"] = 12000
    tier[1]["stay_when"]["value"] = 10000
    doc["ladders"].append({"name": "basket", "tiers": [
        {"name": "big", "when": {"metric": "avg_order_value_365d", "op": ">=", "value": 2000}},
        {"name": "small"}]})
    return doc


def templates(active: ActivePolicy) -> list[CustomerState]:
    """16 kinds of customer: 1 to 16 purchases of 250 to 4,000 over the past year."""
    out = []
    for kind in range(16):
        state = CustomerState(f"t{kind}")
        for n in range(kind + 1):
            event = parse_event_obj({
                "event_id": f"t{kind}-{n}", "type": "purchase", "customer_id": state.customer_id,
                "occurred_at": (NOW - timedelta(days=10 + 20 * n)).isoformat(),
                "data": {"amount": str(250 * (1 + kind % 8) * (1 + kind // 8)),
                         "currency": "CNY"}})
            apply(state.aggregates, event)
        grade_customer(state, active, now=NOW, today=TODAY, reason="event")
        out.append(state)
    return out


async def store(db_url: str, count: int, tag: str) -> None:
    """`count` customers, kind i % 16, graded today and not due for 100 days."""
    conn = await connect(db_url)
    try:
        active = await PolicyCache(base_currency="CNY").load(conn)
        kinds = [(repo.encode_state(s), repo.tier_labels(s)) for s in templates(active)]
        started = time.perf_counter()
        for first in range(0, count, 100_000):
            rows = []
            for i in range(first, min(first + 100_000, count)):
                cid = f"p{tag}-{i}"
                blob, tiers = kinds[i % len(kinds)]
                rows.append((cid, owner_partition(cid, PARTITIONS), blob, tiers, active.version,
                             TODAY, TODAY + timedelta(days=100), NOW))
            await conn.copy_records_to_table("customers", columns=repo.STAGE_COLUMNS,
                                              records=rows)
        await conn.execute("VACUUM ANALYZE customers")
        print(f"stored {count:,} customers in {time.perf_counter() - started:.1f}s; "
              f"{await table_size(conn, 'customers', count)}", flush=True)
    finally:
        await conn.close()


async def table_size(conn: Any, table: str, rows: int) -> str:
    """A table's size with its indexes and TOAST, in all and per row."""
    size = int(await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table))
    return f"{table}: {size / 2**20:,.0f} MiB with indexes, {size / max(rows, 1):,.0f} B per row"


async def run_simulation(db_url: str, workers: int, count: int) -> Counter[tuple[str, Any, Any]]:
    """Simulate the candidate; the transitions it finds (moves only)."""
    started = time.perf_counter()
    result = await simulate(db_url, candidate(), version=2, base_currency="CNY",
                            partitions=PARTITIONS, workers=workers, now=NOW)
    seconds = time.perf_counter() - started
    print(f"simulate: {result.customers:,} customers in {seconds:.1f}s "
          f"({result.customers / seconds:,.0f}/s, {workers} workers); "
          f"{result.changed:,} would change", flush=True)
    moves: Counter[tuple[str, Any, Any]] = Counter()
    for ladder, counts in result.counts.items():
        for (frm, to), n in counts.items():
            if frm != to:
                moves[(ladder, frm, to)] += n
    for (ladder, frm, to), n in sorted(moves.items(), key=lambda kv: -kv[1])[:8]:
        print(f"    {ladder}: {frm} -> {to}: {n:,}")
    assert result.customers == count, result.customers
    return moves


async def run_apply(db_url: str, bootstrap: str, consumers: int, tag: str,
                    ) -> Counter[tuple[str, Any, Any]]:
    """Store the candidate as a new version with its job; the graders apply it."""
    settings = run_settings(db_url, bootstrap, tag)
    await ensure_topics(settings)
    graders = GraderProcesses(settings, consumers)
    await graders.start()
    try:
        conn = await connect(db_url)
        try:
            async with conn.transaction():
                version = await repo.insert_policy(conn, candidate())
                job_id = await jobs.create_regrade_job(conn, version=version)
            started, cpu = time.perf_counter(), cpu_seconds(graders)
            deadline = time.monotonic() + 1800
            first_progress = None
            last_print = 0.0
            while True:
                job = await jobs.get_job(conn, job_id)
                assert job is not None
                if job["done"] and first_progress is None:
                    first_progress = (time.perf_counter(), job["done"])
                if job["status"] != "running":
                    break
                if time.monotonic() - last_print > 10:
                    last_print = time.monotonic()
                    print(f"    apply: {job['done']:,}/{job['total']:,}", flush=True)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"apply: {job}")
                await asyncio.sleep(0.2)  # polling a deadline-bounded wait
            seconds = time.perf_counter() - started
            used = cpu_report(cpu, cpu_seconds(graders), job["total"]).replace("event",
                                                                              "customer")
            async with httpx.AsyncClient() as client:
                gc_s = await graders.total(client, "tierflow_grader_gc_seconds_total")
            used += f" (of which the graders' garbage collector {gc_s / job['total'] * 1e6:.1f})"
            rows = await conn.fetch(
                "SELECT payload::text FROM tier_changes WHERE payload->>'reason' = 'policy' "
                "AND payload->>'type' = 'tier.changed'")
            changes = int(await conn.fetchval("SELECT count(*) FROM tier_changes"))
            print(await table_size(conn, "tier_changes", changes), flush=True)
            vacuums = await conn.fetch(
                "SELECT relname, autovacuum_count, autoanalyze_count, n_tup_upd, n_tup_hot_upd "
                "FROM pg_stat_user_tables WHERE relname IN ('customers', 'tier_changes') "
                "ORDER BY relname")
            print("autovacuum runs (vacuum/analyze) by then: " + ", ".join(
                f"{r[0]} {r[1]}/{r[2]}" for r in vacuums)
                + f"; customer rows updated {vacuums[0][3]:,}, of which HOT (no index "
                f"writes) {vacuums[0][4]:,}", flush=True)
        finally:
            await conn.close()
    finally:
        graders.stop()
    total = job["total"]
    rate = ""
    if first_progress is not None:
        t0, d0 = first_progress
        rate = f", {(total - d0) / max(time.perf_counter() - t0, 1e-9):,.0f}/s once under way"
    print(f"apply: {job['status']}, {total:,} customers in {seconds:.1f}s from the new "
          f"version ({total / seconds:,.0f}/s{rate}; {consumers} consumer processes); {used}",
          flush=True)
    moves: Counter[tuple[str, Any, Any]] = Counter()
    for (text,) in rows:
        p = orjson.loads(text)
        moves[(p["ladder"], p["from_tier"], p["to_tier"])] += 1
    return moves


async def bench(db_url: str, bootstrap: str, args: argparse.Namespace) -> None:
    """Store, simulate, apply, compare."""
    await upgrade(db_url)
    tag = uuid.uuid4().hex[:6]
    await store(db_url, args.customers, tag)
    simulated = await run_simulation(db_url, args.workers, args.customers)
    applied = await run_apply(db_url, bootstrap, args.consumers, tag)
    print(f"simulated transitions = applied: {simulated == applied} "
          f"({sum(simulated.values()):,} / {sum(applied.values()):,} changes)")


def main() -> None:
    """Start or find the servers and run."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2, help="simulate worker processes")
    parser.add_argument("--consumers", type=int, default=2, help="grader consumer processes")
    run_with_servers(bench, parser.parse_args())


if __name__ == "__main__":
    main()
