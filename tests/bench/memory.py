"""The memory check: the grader's RSS while it grades many events for many customers with
a small state budget. Events are produced by a child process chunk by chunk, so this
process's memory is the grader's alone (plus the bench's small bookkeeping).

Run: `.venv/bin/python -m tests.bench.bench_grader --memory [--memory-events N]
[--memory-budget-mb M]`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from pathlib import Path

from shared.kafka import ensure_topics
from tests.bench.bench_grader import Grader, make_events, produce, run_settings

CHUNK = 500_000
CUSTOMERS_PER_EVENT = 50  # 10M events -> 200,000 customers: far more than the budget holds


def rss_mib() -> float:
    """This process's resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def memory_check(db_url: str, bootstrap: str, args: argparse.Namespace) -> None:
    """Grade `--memory-events` events in chunks; print RSS and the state estimate after
    each chunk, and the peak."""
    tag = uuid.uuid4().hex[:8]
    customers = max(args.memory_events // CUSTOMERS_PER_EVENT, 1)
    settings = run_settings(db_url, bootstrap, tag, state_memory_mb=args.memory_budget_mb)
    await ensure_topics(settings)  # before the consumer subscribes (and auto-creates it)
    grader = Grader(settings)
    await grader.start()
    print(f"memory check: {args.memory_events:,} events, {customers:,} customers, "
          f"state budget {args.memory_budget_mb} MiB; RSS at start {rss_mib():,.0f} MiB")
    peak = 0.0
    done = 0
    try:
        for chunk, start in enumerate(range(0, args.memory_events, CHUNK), start=1):
            count = min(CHUNK, args.memory_events - start)
            if done:
                grader.pause()
            await produce_chunk(db_url, bootstrap, tag, count, customers, chunk)
            if done:
                grader.resume()
            done += count
            rate = await grader.until(done, f"chunk {chunk}")
            peak = max(peak, rss_mib())
            owned = grader.consumer.owned
            print(f"  {done:>12,} events: RSS {rss_mib():7,.0f} MiB, state estimate "
                  f"{owned.bytes / 2**20:6,.0f} MiB for {len(owned):,} customers, "
                  f"{rate:,.0f} events/s", flush=True)
    finally:
        await grader.stop()
    print(f"peak RSS {peak:,.0f} MiB with a {args.memory_budget_mb} MiB state budget")


async def produce_chunk(db_url: str, bootstrap: str, tag: str, count: int, customers: int,
                        chunk: int) -> None:
    """Generate and produce one chunk in a child process."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bench.memory", db_url, bootstrap, tag, str(count),
        str(customers), str(chunk))
    if await child.wait() != 0:
        raise RuntimeError(f"producing chunk {chunk} failed")


def child_main() -> None:
    """The producer child: `python -m tests.bench.memory URL BOOTSTRAP TAG COUNT CUSTOMERS
    CHUNK`."""
    db_url, bootstrap, tag, count, customers, chunk = sys.argv[1:7]
    settings = run_settings(db_url, bootstrap, tag)
    asyncio.run(produce(settings, make_events(int(count), int(customers), tag, f"m{chunk}")))


if __name__ == "__main__":
    child_main()
