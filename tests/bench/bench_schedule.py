"""Time-driven re-grading: the cost follows the customers due, not the size of the base.

1,000,000 customers are stored (one consumer owns all 12 partitions), each with a due
date; the grader is started on a day on which 1% of them are due, then 10%, then all
of them (what the former daily sweep re-graded every day). For each: seconds from the
partitions being assigned to the last re-grade committed, customers re-graded, rows
written, and the due query's plan. Figures, not timed tests:

    .venv/bin/python -m tests.bench.bench_schedule [--customers 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

from services.grader import repository as repo
from services.grader.consumer import Consumer
from services.grader.grading.aggregates import apply
from services.grader.grading.customer import CustomerState, grade_customer
from services.grader.grading.policy import ActivePolicy
from services.grader.policies import PolicyCache
from services.grader.routing import owner_partition
from services.grader.telemetry import GraderMetrics
from shared.db.engine import KEYED_LOOKUPS, connect
from shared.db.migrate import upgrade
from shared.events import parse_event_obj
from shared.kafka import ensure_topics, make_producer
from tests.bench.bench_grader import PARTITIONS, run_settings, run_with_servers

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
TODAY = NOW.date()
SHARES = (0.01, 0.10, 1.0)


def template(active: ActivePolicy) -> CustomerState:
    """A regular customer: two purchases and a visit over the past half year."""
    state = CustomerState("template")
    for i, (kind, days, data) in enumerate((
            ("purchase", 170, {"amount": "320.00", "currency": "CNY"}),
            ("purchase", 60, {"amount": "80.00", "currency": "CNY"}),
            ("interaction", 20, {"channel": "app", "action": "login"}))):
        event = parse_event_obj({
            "event_id": f"t-{i}", "type": kind, "customer_id": "template", "data": data,
            "occurred_at": (NOW - timedelta(days=days)).isoformat()})
        apply(state.aggregates, event)
    grade_customer(state, active, now=NOW - timedelta(days=1),
                   today=TODAY - timedelta(days=1), reason="event")
    return state


async def store(db_url: str, count: int, tag: str) -> None:
    """`count` customers with the template's state, due from tomorrow on (spread over half
    a year), written with COPY."""
    conn = await connect(db_url)
    try:
        policies = PolicyCache(base_currency="CNY")
        active = await policies.load(conn)
        state = template(active)
        blob, tiers = repo.encode_state(state), repo.tier_labels(state)
        started = time.perf_counter()
        chunk = 100_000
        for first in range(0, count, chunk):
            rows = []
            for i in range(first, min(first + chunk, count)):
                cid = f"s{tag}-{i}"
                due = TODAY + timedelta(days=1 + i % 180)
                rows.append((cid, owner_partition(cid, PARTITIONS), blob, tiers, active.version,
                             TODAY - timedelta(days=1), due, NOW))
            await conn.copy_records_to_table("customers", columns=repo.STAGE_COLUMNS,
                                              records=rows)
        await conn.execute("ANALYZE customers")
        print(f"stored {count:,} customers in {time.perf_counter() - started:.1f}s", flush=True)
    finally:
        await conn.close()


async def make_due(db_url: str, tag: str, share: float) -> int:
    """Make `share` of the customers due today (every 1/share-th); how many are due."""
    step = round(1 / share)
    conn = await connect(db_url)
    try:
        await conn.execute(
            "UPDATE customers SET due_on = $1 WHERE customer_id LIKE $2 "
            "AND split_part(customer_id, '-', 2)::int % $3 = 0", TODAY, f"s{tag}-%", step)
        await conn.execute("VACUUM ANALYZE customers")
        due = await conn.fetchval("SELECT count(*) FROM customers WHERE due_on <= $1", TODAY)
    finally:
        await conn.close()
    plan = await due_plan(db_url)
    print(f"  {due:,} due today; the due query: {plan}", flush=True)
    return int(due)


async def due_plan(db_url: str) -> str:
    """The first line of the due query's plan, on a connection set up as the consumer's."""
    conn = await connect(db_url, settings=KEYED_LOOKUPS)
    try:
        rows = await conn.fetch("EXPLAIN " + repo.DUE_BY_DATE, 0, TODAY, TODAY.min, "", 500)
    finally:
        await conn.close()
    return str(rows[0][0]).strip()


async def regrade(db_url: str, bootstrap: str, tag: str, due: int) -> None:
    """Start a consumer on TODAY, wait for `due` schedule re-grades to commit."""
    settings = run_settings(db_url, bootstrap, tag)  # an empty topic: nothing but time
    await ensure_topics(settings)
    metrics = GraderMetrics()
    consumer = Consumer(settings, policies=PolicyCache(base_currency="CNY"), metrics=metrics,
                        clock=lambda: NOW)
    producer = make_producer(settings, client_id="bench-schedule")
    await producer.start()
    task = asyncio.create_task(consumer.run(producer))
    get = metrics.registry.get_sample_value
    try:
        deadline = time.monotonic() + 900
        while len(consumer.positions.held()) < PARTITIONS:
            await asyncio.sleep(0.01)  # polling a deadline-bounded wait
            if time.monotonic() > deadline or task.done():
                raise TimeoutError("partitions never assigned")
        started, cpu = time.perf_counter(), time.process_time()
        last = 0.0
        while (done := int(get("tierflow_grader_regraded_total", {"reason": "schedule"}) or 0)
               ) < due:
            if task.done():
                task.result()
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {done:,} of {due:,} re-graded")
            if time.monotonic() - last > 5:
                last = time.monotonic()
                print(f"    {done:,}/{due:,} re-graded", flush=True)
            await asyncio.sleep(0.01)
        seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
    conn = await connect(db_url)
    try:
        written = await conn.fetchval("SELECT count(*) FROM customers WHERE graded_on = $1",
                                      TODAY)
        await conn.execute("UPDATE customers SET graded_on = $1 WHERE graded_on = $2",
                           TODAY - timedelta(days=1), TODAY)
    finally:
        await conn.close()
    print(f"  re-graded {due:,} in {seconds:.2f}s ({due / seconds:,.0f} customers/s; "
          f"grader CPU {cpu_s * 1e6 / due:,.0f} us per customer); rows written {written:,}",
          flush=True)


async def bench(db_url: str, bootstrap: str, args: argparse.Namespace) -> None:
    """Store, then 1%, 10%, 100% due."""
    await upgrade(db_url)
    tag = uuid.uuid4().hex[:6]
    await store(db_url, args.customers, tag)
    for share in SHARES:
        print(f"{share:.0%} due:", flush=True)
        due = await make_due(db_url, tag, share)
        await regrade(db_url, bootstrap, tag, due)


def main() -> None:
    """Start or find the servers and run."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    run_with_servers(bench, parser.parse_args())


if __name__ == "__main__":
    main()
