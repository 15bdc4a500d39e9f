"""Grader throughput benchmark: the real consume loop against baselines, on the same events.

Run: `make bench` or `.venv/bin/python tests/bench/bench_grader.py [options]`.
Starts an embedded PostgreSQL and broker unless TIERFLOW_DATABASE_URL /
TIERFLOW_KAFKA_BOOTSTRAP point at running ones. Prints figures; it is not a test.

Per run (fresh topic, group and customers): produce the events; the consume+validate
baseline reads them all; the grader grades them from a cold start (nothing in memory or
in the database), then a second batch for the same customers while it holds them (warm);
a one-transaction-per-event consumer (read, modify, write) grades the first
`--per-event` events. Medians over `--runs`.

`--breakdown` times the grader's steps; `--profile PATH` runs cProfile; `--memory` runs
the long-haul memory check instead (see `memory_check`).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import platform
import pstats
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from pydantic import SecretStr

from services.grader.consumer import Consumer
from services.grader.grading.aggregates import apply
from services.grader.grading.customer import CustomerState
from services.grader.policies import PolicyCache
from services.grader.repository import decode_state, encode_state
from services.grader.routing import owner_partition
from services.grader.telemetry import GraderMetrics
from shared.db.engine import connect
from shared.db.migrate import upgrade
from shared.embedded import EmbeddedBroker, EmbeddedPostgres
from shared.events import parse_event
from shared.kafka import ensure_topics, make_consumer, make_producer
from shared.settings import GraderSettings
from tests.bench import breakdown
from tests.bench.processes import GraderProcesses, cpu_report, cpu_seconds

PARTITIONS = 12
DEADLINE_S = 1200.0
CATEGORIES = ("shoes", "apparel", "electronics", "grocery", "beauty", "home", "toys", "books")
CHANNELS = ("app", "web", "store", "call-center")
ACTIONS = ("login", "view", "review", "share", "referral")
OUTCOMES = ("applied", "duplicate", "dlq", "rerouted")
Events = dict[int, list[tuple[bytes, bytes]]]


@dataclass
class RunResult:
    """One run's figures (events/s)."""

    baseline: float
    cold: float
    warm: float
    per_event: float
    batches: list[int] = field(default_factory=list)


# --- infrastructure ---------------------------------------------------------------------

@contextmanager
def servers(tmp: Path) -> Iterator[tuple[str, str]]:
    """(database url, bootstrap): external ones from the environment, else embedded."""
    db_url = os.environ.get("TIERFLOW_DATABASE_URL")
    bootstrap = os.environ.get("TIERFLOW_KAFKA_BOOTSTRAP")
    pg = None if db_url else EmbeddedPostgres(tmp / "pg")
    broker = None if bootstrap else EmbeddedBroker(log_path=tmp / "tansu.log")
    try:
        db_url = db_url or pg.start()  # type: ignore[union-attr]
        bootstrap = bootstrap or broker.start()  # type: ignore[union-attr]
        yield db_url, bootstrap
    finally:
        if broker:
            broker.stop()
        if pg:
            pg.stop()


def run_settings(db_url: str, bootstrap: str, tag: str, **extra: object) -> GraderSettings:
    """Settings with a topic and consumer group of this run only."""
    return GraderSettings(
        database_url=SecretStr(db_url), kafka_bootstrap=bootstrap,
        topic_events=f"bench-events-{tag}", topic_dlq=f"bench-dlq-{tag}",
        topic_tier_changes=f"bench-changes-{tag}", consumer_group=f"bench-grader-{tag}",
        events_partitions=PARTITIONS, kafka_session_timeout_ms=6000, **extra,
    )


# --- events -----------------------------------------------------------------------------

def event(rng: random.Random, event_id: str, customer: str, now: datetime) -> dict[str, object]:
    """One realistic event: mostly purchases, some refunds, interactions and feedback."""
    when = now - timedelta(seconds=rng.uniform(60, 365 * 86400))
    base = {"event_id": event_id, "customer_id": customer,
            "occurred_at": when.isoformat(), "source": "bench"}
    roll = rng.random()
    if roll < 0.70:
        data: dict[str, object] = {"amount": f"{rng.lognormvariate(5, 1):.2f}", "currency": "CNY",
                                   "category": rng.choice(CATEGORIES), "order_id": event_id}
        return {**base, "type": "purchase", "data": data}
    if roll < 0.75:
        data = {"amount": f"{rng.uniform(5, 200):.2f}", "currency": "CNY"}
        return {**base, "type": "refund", "data": data}
    if roll < 0.95:
        data = {"channel": rng.choice(CHANNELS), "action": rng.choice(ACTIONS)}
        return {**base, "type": "interaction", "data": data}
    data = {"rating": rng.randint(1, 5), "nps": rng.randint(0, 10),
            "complaint": rng.random() < 0.1}
    return {**base, "type": "feedback", "data": data}


def make_events(count: int, customers: int, tag: str, salt: str = "") -> Events:
    """(key, value) pairs by owner partition. Skewed: customer i is drawn with weight
    ~1/sqrt(i), so a few customers are very busy and most have a handful of events."""
    rng = random.Random(tag + salt)
    now = datetime.now(UTC)
    ids = [f"c{tag}-{i}" for i in range(customers)]
    by_partition: Events = {p: [] for p in range(PARTITIONS)}
    for n in range(count):
        customer = ids[int(customers * rng.random() ** 2)]
        value = orjson.dumps(event(rng, f"{customer}-{salt}e{n}", customer, now))
        by_partition[owner_partition(customer, PARTITIONS)].append((customer.encode(), value))
    return by_partition


async def produce(settings: GraderSettings, events: Events) -> None:
    """Publish application-built batches to every partition, many in flight."""
    await ensure_topics(settings)
    producer: AIOKafkaProducer = make_producer(settings, client_id="bench-producer")
    await producer.start()
    futures = []
    try:
        for partition, pairs in events.items():
            batch = producer.create_batch()
            for key, value in pairs:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(
                        batch, settings.topic_events, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            futures.append(await producer.send_batch(
                batch, settings.topic_events, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def produce_timed(settings: GraderSettings, events: Events) -> None:
    """Produce and say how fast."""
    count = sum(len(pairs) for pairs in events.values())
    started = time.perf_counter()
    await produce(settings, events)
    took = time.perf_counter() - started
    print(f"  produced {count:,} in {took:.1f}s ({count / took:,.0f} events/s)", flush=True)


# --- baseline: consume and validate only ---------------------------------------------------

async def baseline(settings: GraderSettings, total: int) -> float:
    """Events/s of getmany + parse_event over the whole topic, from the first batch."""
    consumer = make_consumer(settings, group_id=None, client_id="bench-baseline")
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic_events, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, started = 0, 0.0
        deadline = time.monotonic() + DEADLINE_S
        while seen < total and time.monotonic() < deadline:
            data = await consumer.getmany(timeout_ms=20, max_records=5000)
            if data and not started:
                started = time.perf_counter()
            for batch in data.values():
                for record in batch:
                    parse_event(record.value)
                seen += len(batch)
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
    assert seen >= total, f"baseline saw only {seen} of {total} events"
    return total / elapsed


# --- baseline: one transaction per event ------------------------------------------------

PER_EVENT_TABLES = """
CREATE TABLE IF NOT EXISTS bench_per_event (customer_id text PRIMARY KEY, state bytea NOT NULL);
CREATE TABLE IF NOT EXISTS bench_per_event_ids (event_id text PRIMARY KEY)
"""


async def per_event(settings: GraderSettings, limit: int) -> float:
    """Events/s of the naive consumer: per event, a transaction that dedupes the id, reads
    the customer's row, folds the event in and writes the row back."""
    conn = await connect(settings.database_url.get_secret_value())
    await conn.execute(PER_EVENT_TABLES)
    consumer = make_consumer(settings, group_id=None, client_id="bench-per-event")
    await consumer.start()
    done, started = 0, time.perf_counter()
    try:
        tps = [TopicPartition(settings.topic_events, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while done < limit:
            for batch in (await consumer.getmany(timeout_ms=20, max_records=100)).values():
                for record in batch[: limit - done]:
                    await _one_transaction(conn, parse_event(record.value))
                    done += 1
    finally:
        await consumer.stop()
        await conn.close()
    return done / (time.perf_counter() - started)


async def _one_transaction(conn: object, event: object) -> None:
    async with conn.transaction():  # type: ignore[attr-defined]
        fresh = await conn.fetchval(  # type: ignore[attr-defined]
            "INSERT INTO bench_per_event_ids VALUES ($1) ON CONFLICT DO NOTHING RETURNING true",
            event.event_id)  # type: ignore[attr-defined]
        if not fresh:
            return
        cid = event.customer_id  # type: ignore[attr-defined]
        blob = await conn.fetchval(  # type: ignore[attr-defined]
            "SELECT state FROM bench_per_event WHERE customer_id = $1 FOR UPDATE", cid)
        state = (decode_state(cid, blob, 0, datetime.now(UTC).date()) if blob
                 else CustomerState(cid))
        apply(state.aggregates, event)  # type: ignore[arg-type]
        await conn.execute(  # type: ignore[attr-defined]
            "INSERT INTO bench_per_event VALUES ($1, $2) ON CONFLICT (customer_id) "
            "DO UPDATE SET state = EXCLUDED.state", cid, encode_state(state))


# --- the grader -------------------------------------------------------------------------

def committed(metrics: GraderMetrics) -> int:
    """Events the grader has committed, whatever their outcome."""
    get = metrics.registry.get_sample_value
    return int(sum(get("tierflow_grader_events_total", {"outcome": o}) or 0 for o in OUTCOMES))


class Grader:
    """The real consume loop, run in this process so it can be timed and profiled."""

    def __init__(self, settings: GraderSettings) -> None:
        self.settings = settings
        self.metrics = GraderMetrics()
        self.consumer = Consumer(
            settings, policies=PolicyCache(base_currency=settings.base_currency),
            metrics=self.metrics)
        self.producer = make_producer(settings, client_id="bench-grader")
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the consume loop."""
        await self.producer.start()
        self.task = asyncio.create_task(self.consumer.run(self.producer))

    async def stop(self) -> None:
        """Cancel the loop and close its clients."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.producer.stop()

    async def until(self, target: int, label: str) -> float:
        """Wait until `target` events are committed; events/s from the first to the last
        commit of this phase."""
        start_count = committed(self.metrics)
        first = 0.0
        deadline = time.monotonic() + DEADLINE_S
        last_print = 0.0
        while (done := committed(self.metrics)) < target:
            if self.task is not None and self.task.done():
                self.task.result()
            if done > start_count and not first:
                first = time.perf_counter()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: only {done:,} of {target:,} committed")
            if time.monotonic() - last_print > 5:
                last_print = time.monotonic()
                print(f"    {label}: {done:,}/{target:,} committed", flush=True)
            await asyncio.sleep(0.005)  # polling interval of a deadline-bounded wait
        return (target - start_count) / (time.perf_counter() - (first or time.perf_counter()))

    def pause(self) -> None:
        """Stop fetching (the warm pass's events are produced meanwhile)."""
        kafka = self.consumer.consumer
        assert kafka is not None
        kafka.pause(*kafka.assignment())

    def resume(self) -> None:
        """Fetch again."""
        kafka = self.consumer.consumer
        assert kafka is not None
        kafka.resume(*kafka.assignment())


# --- orchestration ----------------------------------------------------------------------

async def one_run(db_url: str, bootstrap: str, args: argparse.Namespace, n: int) -> RunResult:
    """Fresh topic, group and customer ids: produce, baseline, cold, warm, per-event."""
    tag = uuid.uuid4().hex[:8]
    settings = run_settings(db_url, bootstrap, tag)
    print(f"run {n}: {args.events:,} events for {args.customers:,} customers (tag {tag})",
          flush=True)
    await produce_timed(settings, make_events(args.events, args.customers, tag))
    base = await baseline(settings, args.events)
    print(f"  consume+validate baseline: {base:,.0f} events/s", flush=True)
    if args.consumers > 1:
        cold, warm = await in_processes(settings, args, tag)
    else:
        cold, warm = await in_this_process(settings, args, tag)
    naive = await per_event(settings, args.per_event)
    print(f"  one transaction per event: {naive:,.0f} events/s "
          f"(over the first {args.per_event:,} events)", flush=True)
    return RunResult(base, cold, warm, naive)


async def in_this_process(settings: GraderSettings, args: argparse.Namespace, tag: str,
                          ) -> tuple[float, float]:
    """One consumer in this process (timed steps and profiles are possible): cold, then
    paused while the warm events are produced, then warm."""
    grader = Grader(settings)
    profiler = cProfile.Profile() if args.profile else None
    await grader.start()
    try:
        with breakdown.timing(args.breakdown, "cold", args.events), _profiled(profiler, args):
            cold = await grader.until(args.events, "cold")
        print(f"  grader, cold: {cold:,.0f} events/s", flush=True)
        grader.pause()
        await produce_timed(settings, make_events(args.events, args.customers, tag, "w"))
        grader.resume()
        with breakdown.timing(args.breakdown, "warm", args.events):
            warm = await grader.until(2 * args.events, "warm")
        print(f"  grader, warm: {warm:,.0f} events/s "
              f"(holding {len(grader.consumer.owned):,} customers, "
              f"~{grader.consumer.owned.bytes / 2**20:,.0f} MiB estimated)", flush=True)
    finally:
        await grader.stop()
    return cold, warm


async def in_processes(settings: GraderSettings, args: argparse.Namespace, tag: str,
                       ) -> tuple[float, float]:
    """`--consumers` grader processes in one group, as `tierflow up` runs them. The warm
    events are produced while they idle (the producer is done within seconds)."""
    graders = GraderProcesses(settings, args.consumers)
    await graders.start()
    try:
        before = cpu_seconds(graders)
        cold = await graders.until(args.events, "cold", deadline_s=DEADLINE_S)
        print(f"  grader x{args.consumers}, cold: {cold:,.0f} events/s; "
              f"{cpu_report(before, cpu_seconds(graders), args.events)}", flush=True)
        await produce_timed(settings, make_events(args.events, args.customers, tag, "w"))
        warm = await graders.until(2 * args.events, "warm", deadline_s=DEADLINE_S)
        print(f"  grader x{args.consumers}, warm: {warm:,.0f} events/s", flush=True)
    finally:
        graders.stop()
    return cold, warm


@contextmanager
def _profiled(profiler: cProfile.Profile | None, args: argparse.Namespace) -> Iterator[None]:
    if profiler is None:
        yield
        return
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(30)


async def machine_facts(db_url: str) -> None:
    """What the figures were measured on."""
    conn = await connect(db_url)
    try:
        pg = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cpus} cpus usable ({os.cpu_count()} online), "
          f"Python {platform.python_version()}, PostgreSQL {pg}, {platform.platform()}")


def report(results: list[RunResult]) -> None:
    """The per-run table, medians and ratios."""
    print(f"\n{'run':>4} {'baseline':>10} {'cold':>9} {'warm':>9} {'per-event':>10}  (events/s)")
    for i, r in enumerate(results, 1):
        print(f"{i:>4} {r.baseline:>10,.0f} {r.cold:>9,.0f} {r.warm:>9,.0f} {r.per_event:>10,.0f}")

    def med(name: str) -> float:
        return statistics.median(getattr(r, name) for r in results)

    base, cold, warm, naive = med("baseline"), med("cold"), med("warm"), med("per_event")
    print(f"\nmedians: consume+validate {base:,.0f}/s; grader cold {cold:,.0f}/s, "
          f"warm {warm:,.0f}/s; one transaction per event {naive:,.0f}/s")
    print(f"ratios: cold/baseline {cold / base:.2f}, warm/baseline {warm / base:.2f}, "
          f"cold/per-event {cold / naive:,.0f}x, warm/per-event {warm / naive:,.0f}x")


async def bench(db_url: str, bootstrap: str, args: argparse.Namespace) -> None:
    """Migrate, describe the machine, run R times, report."""
    await upgrade(db_url)
    await machine_facts(db_url)
    if args.memory:
        from tests.bench.memory import memory_check

        await memory_check(db_url, bootstrap, args)
        return
    results = [await one_run(db_url, bootstrap, args, n) for n in range(1, args.runs + 1)]
    report(results)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--consumers", type=int, default=2,
                        help="grader consumer processes, as `tierflow up` runs them (1: in "
                             "this process, which --breakdown and --profile need)")
    parser.add_argument("--per-event", type=int, default=3_000,
                        help="events the one-transaction-per-event consumer grades")
    parser.add_argument("--profile", metavar="PATH", default="",
                        help="cProfile the cold pass into PATH and print the top")
    parser.add_argument("--breakdown", action="store_true",
                        help="microseconds per event in each step of the grader")
    parser.add_argument("--memory", action="store_true",
                        help="the memory check: RSS while grading --memory-events events")
    parser.add_argument("--memory-events", type=int, default=10_000_000)
    parser.add_argument("--memory-budget-mb", type=int, default=256)
    args = parser.parse_args()
    if (args.breakdown or args.profile) and args.consumers != 1:
        print("--breakdown and --profile time the grader in this process: --consumers 1")
        args.consumers = 1
    return args


def run_with_servers(bench: Callable[[str, str, argparse.Namespace], Awaitable[None]],
                     args: argparse.Namespace) -> None:
    """Start or find the servers, run `bench(db_url, bootstrap, args)`, stop what was
    started, and say how long it all took."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tierflow-bench-") as tmp, \
            servers(Path(tmp)) as (db_url, bootstrap):
        asyncio.run(bench(db_url, bootstrap, args))
    print(f"total wall time {time.perf_counter() - started:.0f}s")


def main() -> None:
    """The throughput benchmark (see the module's docstring)."""
    run_with_servers(bench, parse_args())


if __name__ == "__main__":
    main()
