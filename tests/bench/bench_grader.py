"""Grader throughput benchmark: consume+validate alone versus the full grader, per run.

Run: `.venv/bin/python tests/bench/bench_grader.py [--events N] [--customers M] [--runs R]`.
Starts an embedded PostgreSQL and broker unless TIERFLOW_DATABASE_URL /
TIERFLOW_KAFKA_BOOTSTRAP point at running ones. Prints figures; it is not a test.
Diagnostics: `--warm` (a second pass over the now stored customers), `--breakdown` (time per
grader step), `--profile PATH` (cProfile). Grader settings not set here come from TIERFLOW_*,
e.g. TIERFLOW_BATCH_MAX_EVENTS=20000.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import platform
import pstats
import random
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import murmur2
from pydantic import SecretStr

from services.grader import handler, intake
from services.grader import repository as repo
from services.grader import worker as worker_module
from services.grader.metrics import GraderMetrics
from services.grader.policies import PolicyCache
from services.grader.worker import GraderWorker
from shared.db.engine import make_engine, raw
from shared.db.migrate import upgrade
from shared.embedded import EmbeddedBroker, EmbeddedPostgres
from shared.events import parse_event
from shared.kafka import ensure_topics, make_consumer, make_producer
from shared.settings import GraderSettings

PARTITIONS = 12
DEADLINE_S = 600.0
CATEGORIES = ("shoes", "apparel", "electronics", "grocery", "beauty", "home", "toys", "books")
CHANNELS = ("app", "web", "store", "call-center")
ACTIONS = ("login", "view", "review", "share", "referral")
OUTCOMES = ("applied", "duplicate", "dlq")


@dataclass
class RunResult:
    """One run's figures."""

    baseline_eps: float
    grader_eps: float
    batch_sizes: list[int] = field(default_factory=list)
    batch_seconds: list[float] = field(default_factory=list)
    warm_eps: float | None = None


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
    except BaseException:
        log = tmp / "tansu.log"
        if broker and log.exists():  # the embedded broker's last words explain most failures
            print("--- tail of the embedded broker's log ---")
            print("\n".join(log.read_text(errors="replace").splitlines()[-30:]))
        raise
    finally:
        if broker:
            broker.stop()
        if pg:
            pg.stop()


def run_settings(db_url: str, bootstrap: str, tag: str) -> GraderSettings:
    """Settings with a topic and consumer group of this run only."""
    return GraderSettings(
        database_url=SecretStr(db_url), kafka_bootstrap=bootstrap,
        topic_events=f"bench-events-{tag}", topic_dlq=f"bench-dlq-{tag}",
        topic_tier_changes=f"bench-changes-{tag}", consumer_group=f"bench-grader-{tag}",
        events_partitions=PARTITIONS, kafka_session_timeout_ms=6000,
    )


# --- events -----------------------------------------------------------------------------

def event(rng: random.Random, event_id: str, customer: str, now: datetime) -> dict[str, object]:
    """One realistic event: mostly purchases, some refunds, interactions and feedback."""
    when = now - timedelta(seconds=rng.uniform(60, 365 * 86400))
    base = {"event_id": event_id, "customer_id": customer,
            "occurred_at": when.isoformat(), "source": "bench"}
    roll = rng.random()
    if roll < 0.78:
        amount = f"{rng.lognormvariate(5, 1):.2f}"
        data: dict[str, object] = {"amount": amount, "currency": "CNY",
                                   "category": rng.choice(CATEGORIES), "order_id": event_id}
        return {**base, "type": "purchase", "data": data}
    if roll < 0.83:
        data = {"amount": f"{rng.uniform(5, 200):.2f}", "currency": "CNY"}
        return {**base, "type": "refund", "data": data}
    if roll < 0.95:
        data = {"channel": rng.choice(CHANNELS), "action": rng.choice(ACTIONS)}
        return {**base, "type": "interaction", "data": data}
    data = {"rating": rng.randint(1, 5), "nps": rng.randint(0, 10),
            "complaint": rng.random() < 0.1}
    return {**base, "type": "feedback", "data": data}


def make_events(
    count: int, customers: int, tag: str, salt: str = ""
) -> dict[int, list[tuple[bytes, bytes]]]:
    """(key, value) pairs grouped by the partition the default partitioner would pick."""
    rng = random.Random(tag + salt)
    now = datetime.now(UTC)
    ids = [f"c{tag}-{i}" for i in range(customers)]
    partition_of = {c: (murmur2(c.encode()) & 0x7FFFFFFF) % PARTITIONS for c in ids}
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(PARTITIONS)}
    for n in range(count):
        customer = ids[int(customers * rng.random() ** 2)]  # some customers far busier
        value = orjson.dumps(event(rng, f"{customer}-{salt}e{n}", customer, now))
        by_partition[partition_of[customer]].append((customer.encode(), value))
    return by_partition


async def produce(settings: GraderSettings, events: dict[int, list[tuple[bytes, bytes]]]) -> None:
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
            data = await consumer.getmany(timeout_ms=settings.batch_timeout_ms, max_records=5000)
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


# --- the grader -------------------------------------------------------------------------

class TimedWorker(GraderWorker):
    """The real worker, noting batch sizes and times and when `target` events are in."""

    def track(self, target: int) -> None:
        """Start recording; `finished` is set once `target` events are committed."""
        self.target = target
        self.finished = asyncio.Event()
        self.first_start = self.last_end = 0.0
        self.cpu_start = self.cpu_end = 0.0
        self.sizes: list[int] = []
        self.seconds: list[float] = []

    async def handle(self, records: list[ConsumerRecord]) -> None:
        """Time the real batch handling; check the committed counter after each batch."""
        started = time.perf_counter()
        if not self.first_start:
            self.first_start, self.cpu_start = started, time.process_time()
        await super().handle(records)
        self.last_end, self.cpu_end = time.perf_counter(), time.process_time()
        self.sizes.append(len(records))
        self.seconds.append(self.last_end - started)
        if consumed(self.metrics) >= self.target:
            self.finished.set()


def consumed(metrics: GraderMetrics) -> int:
    """Events the grader has committed, whatever their outcome."""
    get = metrics.registry.get_sample_value
    return int(sum(get("tierflow_grader_events_total", {"outcome": o}) or 0 for o in OUTCOMES))


async def grader(settings: GraderSettings, total: int) -> TimedWorker:
    """Run a GraderWorker over the topic until every event is committed."""
    engine = make_engine(settings.database_url.get_secret_value(), pool_size=settings.db_pool_size)
    policies, metrics = PolicyCache(), GraderMetrics()
    producer = make_producer(settings, client_id="bench-grader-dlq")
    worker = TimedWorker(settings, engine=engine, policies=policies, metrics=metrics,
                         producer=producer)
    worker.track(total)
    async with engine.connect() as sa_conn:
        await policies.load(await raw(sa_conn))
    await producer.start()
    task = asyncio.create_task(worker.run())
    try:
        await wait_all(worker, task)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
        await engine.dispose()
    return worker


async def wait_all(worker: TimedWorker, task: asyncio.Task[None]) -> None:
    """Wait until the worker has committed its target, printing progress, within a deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while not worker.finished.is_set():
        if task.done():
            task.result()  # surfaces the worker's failure
        done = consumed(worker.metrics)
        if time.monotonic() > deadline:
            raise TimeoutError(f"grader committed only {done} of {worker.target} events")
        print(f"    grader: {done:,}/{worker.target:,} committed", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.finished.wait(), timeout=5.0)


# --- optional: where the grader's time goes ---------------------------------------------

PHASES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)
TIMED_REPO = ("latest_policy_version", "advance_offsets", "hold_places", "load_customers",
              "claim_events", "save_customers", "record_changes", "drop_places")


def _timed_async(name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            PHASES[name] += time.perf_counter() - started
            CALLS[name] += 1
    return wrapper


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            PHASES[name] += time.perf_counter() - started
            CALLS[name] += 1
    return wrapper


def install_breakdown() -> None:
    """Wrap the grader's steps with timers (the bench's own wrappers; grader code unchanged)."""
    for name in TIMED_REPO:
        setattr(repo, name, _timed_async(f"sql {name}", getattr(repo, name)))
    patches: list[tuple[object, str, Callable[..., Any]]] = [
        (handler, "grade_customer", _timed("grade_customer (pure)", handler.grade_customer)),
        (intake, "parse_event", _timed("parse_event", parse_event)),
        (worker_module, "validate", _timed("validate (incl. parse)", intake.validate)),
        (TimedWorker, "_observe", _timed("_observe (metrics)", GraderWorker._observe)),
        (TimedWorker, "_commit", _timed_async("_commit (db + grading)", GraderWorker._commit)),
    ]
    for owner, name, wrapped in patches:
        setattr(owner, name, wrapped)


def show_breakdown(events: int, handle_s: float) -> None:
    """Seconds per step and microseconds per event, then reset."""
    print(f"  breakdown over {events:,} events ({handle_s:.2f}s inside handle):")
    for name, secs in sorted(PHASES.items(), key=lambda kv: -kv[1]):
        print(f"    {name:<30} {secs:7.2f}s {secs / events * 1e6:7.1f} us/event "
              f"{CALLS[name]:>9,} calls {secs / CALLS[name] * 1e6:9.1f} us/call")
    PHASES.clear()
    CALLS.clear()


# --- orchestration ----------------------------------------------------------------------

async def one_run(db_url: str, bootstrap: str, args: argparse.Namespace, n: int) -> RunResult:
    """Fresh topic, group and customer ids; produce, then baseline, then the grader."""
    tag = uuid.uuid4().hex[:8]
    settings = run_settings(db_url, bootstrap, tag)
    print(f"run {n}: generating {args.events:,} events for {args.customers:,} customers "
          f"(tag {tag})", flush=True)
    await produce_timed(settings, make_events(args.events, args.customers, tag))
    base = await baseline(settings, args.events)
    print(f"  baseline: {base:,.0f} events/s", flush=True)
    worker = await measured_grader(settings, args)
    result = RunResult(base, rate(worker), worker.sizes, worker.seconds)
    if args.warm:
        # Same customers again (now stored, with tiers), new events on a new topic and group.
        warm = run_settings(db_url, bootstrap, tag + "w")
        print("  warm pass: same customers, new events", flush=True)
        await produce_timed(warm, make_events(args.events, args.customers, tag, salt="w"))
        result.warm_eps = rate(await measured_grader(warm, args))
    return result


async def produce_timed(settings: GraderSettings, events: dict[int, list[tuple[bytes, bytes]]],
                        ) -> None:
    """Produce and say how fast."""
    count = sum(len(pairs) for pairs in events.values())
    started = time.perf_counter()
    await produce(settings, events)
    took = time.perf_counter() - started
    print(f"  produced in {took:.1f}s ({count / took:,.0f} events/s)", flush=True)


def rate(worker: TimedWorker) -> float:
    """Events/s from the first batch's start to the last batch's commit."""
    return worker.target / (worker.last_end - worker.first_start)


async def measured_grader(settings: GraderSettings, args: argparse.Namespace) -> TimedWorker:
    """The grader over the whole topic, profiled or broken down when asked."""
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    worker = await grader(settings, args.events)
    if profiler:
        profiler.disable()
        show_profile(profiler, args.profile)
    if args.breakdown:
        show_breakdown(args.events, sum(worker.seconds))
    changes = sum(
        sample.value for metric in worker.metrics.tier_changes.collect()
        for sample in metric.samples if sample.name.endswith("_total")
    )
    cpu = (worker.cpu_end - worker.cpu_start) / (worker.last_end - worker.first_start)
    print(f"  grader:   {rate(worker):,.0f} events/s in {len(worker.sizes)} batches, "
          f"{changes:,.0f} tier changes, this process on CPU {cpu:.0%} of the time", flush=True)
    return worker


def show_profile(profiler: cProfile.Profile, path: str) -> None:
    """Save the profile and print its hottest functions."""
    profiler.dump_stats(path)
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)


async def machine_facts(db_url: str) -> None:
    """What the figures were measured on."""
    engine = make_engine(db_url, pool_size=1)
    try:
        async with engine.connect() as sa_conn:
            pg = await (await raw(sa_conn)).fetchval("SHOW server_version")
    finally:
        await engine.dispose()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cpus} cpus usable ({os.cpu_count()} online), "
          f"Python {platform.python_version()}, PostgreSQL {pg}, {platform.platform()}")


def report(results: list[RunResult]) -> None:
    """The per-run table, medians and the ratio."""
    print(f"\n{'run':>4} {'baseline ev/s':>14} {'grader ev/s':>12} {'warm ev/s':>10} "
          f"{'batches':>8} {'p50 size':>9} {'p50 batch ms':>13}")
    for i, r in enumerate(results, 1):
        warm = f"{r.warm_eps:,.0f}" if r.warm_eps else "-"
        print(f"{i:>4} {r.baseline_eps:>14,.0f} {r.grader_eps:>12,.0f} {warm:>10} "
              f"{len(r.batch_sizes):>8} {statistics.median(r.batch_sizes):>9,.0f} "
              f"{statistics.median(r.batch_seconds) * 1000:>13.1f}")
    base = statistics.median(r.baseline_eps for r in results)
    grade = statistics.median(r.grader_eps for r in results)
    sizes = [s for r in results for s in r.batch_sizes]
    secs = [s for r in results for s in r.batch_seconds]
    print(f"\nmedian baseline: {base:,.0f} events/s   median grader: {grade:,.0f} events/s   "
          f"grader/baseline: {grade / base:.2f}")
    warms = [r.warm_eps for r in results if r.warm_eps]
    if warms:
        print(f"median grader, warm customers: {statistics.median(warms):,.0f} events/s")
    print(f"grader batches (cold passes): median size {statistics.median(sizes):,.0f} events, "
          f"median {statistics.median(secs) * 1000:.1f} ms, max {max(secs) * 1000:.1f} ms")


async def bench(db_url: str, bootstrap: str, args: argparse.Namespace) -> None:
    """Migrate, describe the machine, run R times, report."""
    await upgrade(db_url)
    await machine_facts(db_url)
    results = [await one_run(db_url, bootstrap, args, n) for n in range(1, args.runs + 1)]
    report(results)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", metavar="PATH", default="",
                        help="cProfile the grader phase of each run into PATH and print top")
    parser.add_argument("--warm", action="store_true",
                        help="also grade a second pass of events for the same (stored) customers")
    parser.add_argument("--breakdown", action="store_true",
                        help="time the grader's steps (SQL statements, parsing, grading)")
    return parser.parse_args()


def main() -> None:
    """Start or find the servers, run the benchmark, stop what was started."""
    args = parse_args()
    if args.breakdown:
        install_breakdown()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tierflow-bench-") as tmp, \
            servers(Path(tmp)) as (db_url, bootstrap):
        asyncio.run(bench(db_url, bootstrap, args))
    print(f"total wall time {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
