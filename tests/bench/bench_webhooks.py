"""Webhook delivery benchmark: deliveries/s to a local receiver, and change-to-webhook latency.

Run: `.venv/bin/python -m tests.bench.bench_webhooks [options]`. Prints figures; it is not
a test. Starts an embedded PostgreSQL and broker unless TIERFLOW_DATABASE_URL /
TIERFLOW_KAFKA_BOOTSTRAP point at running ones (the relay moves *every* unsent tier change,
so an external database should have no other writer meanwhile), then the notifier
(`python -m services.notifier`, default settings unless given) and a receiver, each in its
own process: aiohttp.web on loopback that answers 200 at once and records the wall-clock
arrival of each message id per path.

1. Throughput. For each subscription count N (1, then 10) and each of `--runs` runs: N
   subscriptions to the receiver (one path each) with a filter on a ladder of this run
   only; K unsent tier changes inserted in one transaction with `NOTIFY tierflow_outbox`
   (as the grader writes them; 10% of them a second change of a customer, the rest
   distinct customers); deliveries/s = K x N over the time from that commit to the last
   delivery received; "relayed in": from that commit to the last of them marked sent (on
   the topic, deliveries queued). CPU seconds per 1,000 deliveries for the notifier, the
   receiver, this run's PostgreSQL and broker, this script, and everything else on the
   machine ("other": a busy neighbour shows there). The subscriptions are deleted
   afterwards (their deliveries go with them). `--analyze` refreshes the planner's
   statistics of webhook_deliveries once 1,000 deliveries are queued: the figure a
   notifier that did so itself would reach (the claim and fan-out queries pick a plan
   that scans every pending delivery per row while the statistics say none are pending).
2. Latency. One subscription; tier changes one per transaction (+ NOTIFY) at a steady
   `--rate` per second for `--seconds`; latency = arrival at the receiver - the row's
   `created_at` (`now()` of its transaction, just before the commit). Also the notifier's
   own histograms (change to receiver accepting it; change to broker acknowledging it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import orjson
import psutil
from aiohttp import web
from cryptography.fernet import Fernet
from pydantic import SecretStr

from shared.db.engine import connect
from shared.db.migrate import upgrade
from shared.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from shared.settings import NotifierSettings
from tests.bench.bench_grader import machine_facts
from tests.processes import Service

ADMIN_KEY = "bench-webhooks-admin-key-0001"
TARGET_RATE = 2_000.0  # deliveries/s
TARGET_P99_MS = 250.0
REPEAT_SHARE = 0.1  # of the changes in a throughput run: a customer's second change
POLL_S = 0.05
OUTBOX_COLUMNS = ("message_id", "customer_id", "ladder", "sequence", "kind", "payload")
INSERT_ONE = (
    "INSERT INTO tier_changes (message_id, customer_id, ladder, sequence, kind, payload)"
    " VALUES ($1, $2, $3, $4, $5, $6::jsonb) RETURNING created_at"
)
STALL_S = 10.0
ACTIVITY = """
SELECT pid, state, wait_event_type || '/' || wait_event AS wait,
       extract(epoch FROM now() - query_start)::float8 AS age,
       left(regexp_replace(query, '\\s+', ' ', 'g'), 100) AS query
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND state <> 'idle' AND pid <> pg_backend_pid()
ORDER BY query_start
"""
CPU_KINDS = ("notifier", "receiver", "postgres", "broker", "bench", "other")


# --- servers ------------------------------------------------------------------------------

@dataclass
class Servers:
    """Where PostgreSQL and the broker are; their processes when this script started them."""

    db_url: str
    bootstrap: str
    pg_dir: Path | None
    broker_pid: int | None

    def postgres_pids(self) -> set[int] | None:
        """The embedded postmaster and its children now (None: not ours, count every
        process named postgres)."""
        if self.pg_dir is None:
            return None
        with contextlib.suppress(OSError, ValueError, IndexError, psutil.Error):
            master = psutil.Process(int((self.pg_dir / "postmaster.pid").read_text().split()[0]))
            return {master.pid, *(child.pid for child in master.children(recursive=True))}
        return set()


@contextmanager
def servers(tmp: Path) -> Iterator[Servers]:
    """External ones from the environment, else embedded ones (stopped on the way out)."""
    db_url = os.environ.get("TIERFLOW_DATABASE_URL")
    bootstrap = os.environ.get("TIERFLOW_KAFKA_BOOTSTRAP")
    pg = None if db_url else EmbeddedPostgres(tmp / "pg")
    broker = None if bootstrap else EmbeddedBroker(log_path=tmp / "tansu.log")
    try:
        db_url = db_url or pg.start()  # type: ignore[union-attr]
        bootstrap = bootstrap or broker.start()  # type: ignore[union-attr]
        yield Servers(db_url, bootstrap, pg.data_dir if pg else None,
                      broker.pid if broker else None)
    finally:
        if broker:
            broker.stop()
        if pg:
            pg.stop()


# --- the receiver (its own process: `--receiver PORT`) -----------------------------------

@dataclass
class Arrivals:
    """What the receiver has seen: first arrival (epoch seconds) per path and message id."""

    requests: int = 0
    unique: int = 0
    unsigned: int = 0
    first: float = 0.0
    last: float = 0.0
    by_path: dict[str, dict[str, float]] = field(default_factory=dict)

    def clear(self) -> None:
        """Forget everything."""
        self.requests = self.unique = self.unsigned = 0
        self.first = self.last = 0.0
        self.by_path = {}


def receiver_app() -> web.Application:
    """POST anywhere: 200 at once. GET /stats, GET /arrivals?prefix=, POST /reset."""
    state = Arrivals()

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        now = time.time()
        state.requests += 1
        if "Tierflow-Signature" not in request.headers:
            state.unsigned += 1
        seen = state.by_path.setdefault(request.path, {})
        message_id = request.headers.get("Tierflow-Event-Id", "")
        if message_id not in seen:
            seen[message_id] = now
            state.unique += 1
            state.last = now
            state.first = state.first or now
        return web.Response()

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"requests": state.requests, "unique": state.unique,
                                  "unsigned": state.unsigned, "first": state.first,
                                  "last": state.last})

    async def arrivals(request: web.Request) -> web.Response:
        prefix = request.query.get("prefix", "/")
        found = {mid: t for path, seen in state.by_path.items() if path.startswith(prefix)
                 for mid, t in seen.items()}
        return web.Response(body=orjson.dumps(found), content_type="application/json")

    async def reset(_: web.Request) -> web.Response:
        state.clear()
        return web.Response()

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_get("/arrivals", arrivals)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{tail:.*}", hook)
    return app


def run_receiver(port: int) -> None:
    """Serve the receiver until interrupted (uvloop when installed, like uvicorn)."""
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    web.run_app(receiver_app(), host="127.0.0.1", port=port, access_log=None, shutdown_timeout=1,
                print=None, loop=loop_factory() if loop_factory else None)


class Receiver:
    """The receiver process, seen from the benchmark."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / "receiver.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Launch it (wait with `ready`)."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.bench.bench_webhooks", "--receiver",
                 str(self.port)], stdout=log, stderr=subprocess.STDOUT)

    async def ready(self, client: httpx.AsyncClient, timeout: float = 30.0) -> None:
        """Until /stats answers."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None and self.proc.poll() is None, self.log_path.read_text()
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{self.url}/stats")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("the receiver does not answer")
            await asyncio.sleep(0.1)  # polling interval of a deadline-bounded wait

    async def stats(self, client: httpx.AsyncClient) -> dict[str, float]:
        """Requests, unique deliveries, first and last arrival."""
        stats: dict[str, float] = (await client.get(f"{self.url}/stats")).json()
        return stats

    async def arrivals(self, client: httpx.AsyncClient, prefix: str) -> dict[str, float]:
        """First arrival per message id on paths under `prefix`."""
        response = await client.get(f"{self.url}/arrivals", params={"prefix": prefix},
                                    timeout=60)
        found: dict[str, float] = orjson.loads(response.content)
        return found

    async def reset(self, client: httpx.AsyncClient) -> None:
        """Forget everything seen."""
        (await client.post(f"{self.url}/reset")).raise_for_status()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the notifier -------------------------------------------------------------------------

def notifier_settings(db_url: str, bootstrap: str, args: argparse.Namespace) -> NotifierSettings:
    """The settings the notifier runs with: the defaults unless an option gives a value."""
    chosen = {name: value for name, value in (
        ("relay_batch", args.relay_batch), ("relay_idle_ms", args.relay_idle_ms),
        ("webhook_concurrency", args.concurrency), ("webhook_poll_ms", args.poll_ms),
    ) if value is not None}
    return NotifierSettings(
        database_url=SecretStr(db_url), kafka_bootstrap=bootstrap,
        topic_tier_changes=f"bench-tier-changes-{uuid.uuid4().hex[:8]}",
        api_keys=SecretStr(json.dumps({ADMIN_KEY: ["admin"]})),
        webhook_secrets_key=SecretStr(Fernet.generate_key().decode()),
        webhook_allowed_networks="127.0.0.0/8", log_level="WARNING", **chosen,
    )


def notifier_service(settings: NotifierSettings, log_dir: Path) -> Service:
    """`python -m services.notifier` with exactly these settings."""
    port = free_port()
    key = settings.webhook_secrets_key
    assert key is not None
    env = {
        "TIERFLOW_DATABASE_URL": settings.database_url.get_secret_value(),
        "TIERFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TIERFLOW_TOPIC_TIER_CHANGES": settings.topic_tier_changes,
        "TIERFLOW_API_KEYS": settings.api_keys.get_secret_value(),
        "TIERFLOW_WEBHOOK_SECRETS_KEY": key.get_secret_value(),
        "TIERFLOW_WEBHOOK_ALLOWED_NETWORKS": settings.webhook_allowed_networks,
        "TIERFLOW_NOTIFIER_PORT": str(port),
        "TIERFLOW_RELAY_BATCH": str(settings.relay_batch),
        "TIERFLOW_RELAY_IDLE_MS": str(settings.relay_idle_ms),
        "TIERFLOW_WEBHOOK_CONCURRENCY": str(settings.webhook_concurrency),
        "TIERFLOW_WEBHOOK_POLL_MS": str(settings.webhook_poll_ms),
        "TIERFLOW_LOG_LEVEL": settings.log_level,
    }
    return Service("notifier", env, port=port, log_dir=log_dir)


def metric_samples(text: str) -> dict[str, float]:
    """Prometheus text as {'name{labels}': value} (summed over nothing: as written)."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def scrape(client: httpx.AsyncClient, notifier: Service) -> dict[str, float]:
    """The notifier's /metrics."""
    return metric_samples((await client.get(f"{notifier.url}/metrics")).text)


@dataclass
class Bench:
    """What every phase uses."""

    args: argparse.Namespace
    servers: Servers
    conn: asyncpg.Connection
    client: httpx.AsyncClient
    notifier: Service
    receiver: Receiver

    def admin(self) -> dict[str, str]:
        """The admin key's header."""
        return {"Authorization": f"Bearer {ADMIN_KEY}"}

    async def subscribe(self, tag: str, ladder: str, count: int) -> list[str]:
        """`count` subscriptions to the receiver, one path each, for `ladder` only; returns
        once the notifier's dispatcher runs a worker for each (its backlog gauge shows)."""
        ids = []
        for i in range(count):
            response = await self.client.post(
                f"{self.notifier.url}/v1/subscriptions", headers=self.admin(),
                json={"url": f"{self.receiver.url}/hook/{tag}/{i}",
                      "filter": {"ladders": [ladder]}})
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        deadline = time.monotonic() + 30
        while True:
            text = (await self.client.get(f"{self.notifier.url}/metrics")).text
            if all(f'tierflow_webhook_backlog{{subscription="{sid}"}}' in text for sid in ids):
                return ids
            if time.monotonic() > deadline:
                raise TimeoutError("the notifier did not pick the subscriptions up")
            await asyncio.sleep(POLL_S)  # polling interval of a deadline-bounded wait

    async def unsubscribe(self, ids: Sequence[str]) -> None:
        """Delete them (their deliveries go with them)."""
        for sid in ids:
            response = await self.client.delete(
                f"{self.notifier.url}/v1/subscriptions/{sid}", headers=self.admin())
            assert response.status_code == 204, response.text

    async def until_received(self, expected: int, label: str, deadline_s: float,
                             ) -> dict[str, float]:
        """Poll the receiver until `expected` distinct deliveries have arrived."""
        deadline, said = time.monotonic() + deadline_s, time.monotonic()
        seen, moved, stalled = -1.0, time.monotonic(), False
        while True:
            stats = await self.receiver.stats(self.client)
            if stats["unique"] >= expected:
                return stats
            if stats["unique"] != seen:
                seen, moved, stalled = stats["unique"], time.monotonic(), False
            elif not stalled and time.monotonic() - moved > STALL_S:
                stalled = True
                await self.show_activity(f"{label}: nothing received for {STALL_S:g}s")
            assert self.notifier.proc is not None and self.notifier.proc.poll() is None, \
                self.notifier.log_tail()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: only {stats['unique']:,.0f} of {expected:,} "
                                   f"deliveries arrived\n{self.notifier.log_tail()}")
            if time.monotonic() - said > 5:
                said = time.monotonic()
                print(f"    {label}: {stats['unique']:,.0f}/{expected:,} received", flush=True)
            await asyncio.sleep(POLL_S)  # polling interval of a deadline-bounded wait

    async def show_activity(self, why: str) -> None:
        """What PostgreSQL's client backends are doing (for a stall)."""
        print(f"    {why}; PostgreSQL's busy sessions:", flush=True)
        for r in await self.conn.fetch(ACTIVITY):
            print(f"      pid {r['pid']} {r['state']} {r['wait'] or '-'} for {r['age']:.1f}s: "
                  f"{r['query']}", flush=True)


def log_problems(notifier: Service, lines: int = 20) -> None:
    """The notifier's warnings and errors (its log goes with the temporary directory)."""
    if not notifier.log_path.exists():
        return
    text = notifier.log_path.read_text(errors="replace").splitlines()
    problems = [line for line in text
                if " WARNING " in line or " ERROR " in line or "Traceback" in line]
    if problems:
        print(f"\nnotifier log: {len(problems)} warnings/errors, the last {lines}:")
        for line in problems[-lines:]:
            print(f"  {line[:200]}")


# --- tier changes -------------------------------------------------------------------------

def change_row(customer: str, ladder: str, sequence: int) -> tuple[object, ...]:
    """A tier_changes row as the grader writes it (OUTBOX_COLUMNS), message in `payload`."""
    message_id = uuid.uuid4()
    payload = {
        "id": str(message_id), "type": "tier.changed", "schema_version": 1,
        "customer_id": customer, "ladder": ladder, "from_tier": "regular", "to_tier": "vip",
        "direction": "up", "reason": "event", "policy_version": 1,
        "changed_at": "2026-11-20T02:15:01.120Z", "cause_event_id": f"{customer}-e{sequence}",
        "sequence": sequence, "actions": ["assign_account_manager", "exclusive_offer"],
        "metrics": {"spend_365d": "51200.00", "orders_365d": 13},
    }
    return (message_id, customer, ladder, sequence, "tier.changed",
            orjson.dumps(payload).decode())


def bulk_rows(tag: str, ladder: str, count: int) -> list[tuple[object, ...]]:
    """`count` changes: distinct customers, then a second change for some of them."""
    firsts = count - int(count * REPEAT_SHARE)
    rows = [change_row(f"c{tag}-{i}", ladder, 1) for i in range(firsts)]
    rows += [change_row(f"c{tag}-{i}", ladder, 2) for i in range(count - firsts)]
    return rows


# --- CPU ----------------------------------------------------------------------------------

def cpu_seconds(bench: Bench) -> dict[str, float]:
    """CPU seconds used so far: the notifier, the receiver, PostgreSQL, the broker, this
    script, and everything else on the machine (a busy neighbour shows up there)."""
    pids = {bench.notifier.proc.pid if bench.notifier.proc else -1: "notifier",
            bench.receiver.proc.pid if bench.receiver.proc else -1: "receiver",
            os.getpid(): "bench"}
    if bench.servers.broker_pid is not None:
        pids[bench.servers.broker_pid] = "broker"
    postgres = bench.servers.postgres_pids()
    used = dict.fromkeys(CPU_KINDS, 0.0)
    for proc in psutil.process_iter(["name", "pid", "cpu_times"]):
        times = proc.info["cpu_times"]
        if times is None:
            continue
        pid, name = proc.info["pid"], proc.info["name"] or ""
        kind = pids.get(pid) or ("postgres" if (pid in postgres if postgres is not None
                                                else name == "postgres") else "")
        if not kind and bench.servers.broker_pid is None and name.startswith("tansu"):
            kind = "broker"
        if kind:
            used[kind] += times.user + times.system
    machine = psutil.cpu_times()
    busy = machine.user + machine.nice + machine.system + getattr(machine, "irq", 0.0) \
        + getattr(machine, "softirq", 0.0)
    used["other"] = busy - sum(used.values())
    return used


def per_thousand(before: dict[str, float], after: dict[str, float], deliveries: int,
                 ) -> dict[str, float]:
    """CPU seconds per 1,000 deliveries, by process kind."""
    return {kind: (after[kind] - before[kind]) / deliveries * 1000 for kind in CPU_KINDS}


# --- 1. throughput ------------------------------------------------------------------------

@dataclass
class Throughput:
    """One run with N subscriptions."""

    subscriptions: int
    changes: int
    rate: float  # deliveries/s, commit to last received
    relayed_s: float  # commit to the last of the changes marked sent (fanned out)
    cpu: dict[str, float]  # seconds per 1,000 deliveries
    duplicates: int


async def throughput_run(bench: Bench, subscriptions: int, changes: int, run: int,
                         ) -> Throughput:
    """K changes in one transaction, delivered to N subscriptions."""
    tag = uuid.uuid4().hex[:8]
    ladder = f"bench-{tag}"
    expected = subscriptions * changes
    await bench.receiver.reset(bench.client)
    ids = await bench.subscribe(tag, ladder, subscriptions)
    rows = bulk_rows(tag, ladder, changes)
    try:
        before = cpu_seconds(bench)
        async with bench.conn.transaction():
            await bench.conn.copy_records_to_table(
                "tier_changes", columns=OUTBOX_COLUMNS, records=rows)
            await bench.conn.execute("NOTIFY tierflow_outbox")
        committed = time.time()
        analyzer = (asyncio.create_task(analyze_when_queued(bench, min(1000, expected)))
                    if bench.args.analyze else None)
        stats = await bench.until_received(
            expected, f"run {run}, {subscriptions} sub", max(60.0, expected / 100))
        after = cpu_seconds(bench)
        if analyzer is not None:
            analyzer.cancel()
            await asyncio.gather(analyzer, return_exceptions=True)
        relayed = await bench.conn.fetchval(
            "SELECT extract(epoch FROM max(sent_at)) FROM tier_changes WHERE ladder = $1",
            ladder)
    finally:
        await bench.unsubscribe(ids)
    result = Throughput(
        subscriptions, changes, expected / (stats["last"] - committed),
        float(relayed) - committed, per_thousand(before, after, expected),
        int(stats["requests"] - stats["unique"]))
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in result.cpu.items())
    print(f"  run {run}, {subscriptions:>2} subscription(s) x {changes:,} changes: "
          f"{result.rate:,.0f} deliveries/s (relayed in {result.relayed_s:.2f}s, "
          f"all received in {stats['last'] - committed:.2f}s; "
          f"{result.duplicates} duplicates, {stats['unsigned']:.0f} unsigned); "
          f"CPU s per 1,000: {cpu}", flush=True)
    return result


async def analyze_when_queued(bench: Bench, pending: int) -> None:
    """`--analyze`: ANALYZE webhook_deliveries once `pending` deliveries wait, as a notifier
    that refreshed the statistics after a large fan-out would."""
    conn = await connect(bench.servers.db_url)
    try:
        while await conn.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'") < pending:
            await asyncio.sleep(0.02)  # polling interval; cancelled with the run
        took = time.perf_counter()
        await conn.execute("ANALYZE webhook_deliveries")
        print(f"    (--analyze: ANALYZE webhook_deliveries at {pending:,} pending took "
              f"{(time.perf_counter() - took) * 1000:.0f} ms)", flush=True)
    finally:
        await conn.close()


# --- 2. latency ---------------------------------------------------------------------------

@dataclass
class Latency:
    """The paced run."""

    count: int
    achieved_rate: float
    millis: list[float]  # sorted
    missing: int
    cpu: dict[str, float]
    delivery_hist: tuple[float, float]  # notifier's (sum, count) over this phase
    relay_hist: tuple[float, float]
    delivery_p99_bucket: float


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted values."""
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def histogram_delta(before: dict[str, float], after: dict[str, float], name: str,
                    ) -> tuple[float, float]:
    """(sum, count) of a label-less histogram between two scrapes."""
    total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
    count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    return total, count


def bucket_quantile(before: dict[str, float], after: dict[str, float], name: str, q: float,
                    ) -> float:
    """The upper bound of the bucket that holds the q-quantile, between two scrapes."""
    prefix = f'{name}_bucket{{le="'
    buckets = sorted(
        (float(key[len(prefix):-2]), after[key] - before.get(key, 0.0))
        for key in after if key.startswith(prefix))
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    for bound, cumulative in buckets:
        if cumulative >= q * buckets[-1][1]:
            return bound
    return math.inf


async def latency_run(bench: Bench) -> Latency:
    """One subscription; one change per transaction at a steady rate."""
    args = bench.args
    tag = uuid.uuid4().hex[:8]
    ladder = f"bench-{tag}"
    await bench.receiver.reset(bench.client)
    ids = await bench.subscribe(tag, ladder, 1)
    total = int(args.rate * args.seconds)
    created: dict[str, float] = {}
    try:
        scraped = await scrape(bench.client, bench.notifier)
        before = cpu_seconds(bench)
        print(f"  {total:,} changes at {args.rate:g}/s, one per transaction", flush=True)
        started = time.perf_counter()
        for i in range(total):
            delay = started + i / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            message_id, customer, *rest = change_row(f"c{tag}-{i % 1000}", ladder, i // 1000 + 1)
            async with bench.conn.transaction():
                at = await bench.conn.fetchval(INSERT_ONE, message_id, customer, *rest)
                await bench.conn.execute("NOTIFY tierflow_outbox")
            created[str(message_id)] = at.timestamp()
        achieved = total / (time.perf_counter() - started)
        with contextlib.suppress(TimeoutError):
            await bench.until_received(total, "latency", 60.0)
        cpu = per_thousand(before, cpu_seconds(bench), total)
        arrived = await bench.receiver.arrivals(bench.client, f"/hook/{tag}/")
        rescraped = await scrape(bench.client, bench.notifier)
    finally:
        await bench.unsubscribe(ids)
    millis = sorted((arrived[mid] - t) * 1000 for mid, t in created.items() if mid in arrived)
    name = "tierflow_webhook_delivery_seconds"
    return Latency(
        total, achieved, millis, total - len(millis), cpu,
        histogram_delta(scraped, rescraped, name),
        histogram_delta(scraped, rescraped, "tierflow_notifier_relay_seconds"),
        bucket_quantile(scraped, rescraped, name, 0.99))


# --- report -------------------------------------------------------------------------------

def met(ok: bool) -> str:
    """The verdict next to a target."""
    return "met" if ok else "MISSED"


def report(results: list[Throughput], latency: Latency | None) -> None:
    """Medians per subscription count, CPU, and the latency figures, beside the targets."""
    print("\nthroughput: deliveries/s from the insert commit to the last delivery received "
          f"(target >= {TARGET_RATE:,.0f})")
    print(f"{'subs':>5} {'changes':>8} {'deliveries':>11} {'runs':>24} {'median':>8}  "
          f"{'relayed in':>10}  target")
    for subs in sorted({r.subscriptions for r in results}):
        mine = [r for r in results if r.subscriptions == subs]
        median = statistics.median(r.rate for r in mine)
        runs = " ".join(f"{r.rate:,.0f}" for r in mine)
        relayed = statistics.median(r.relayed_s for r in mine)
        print(f"{subs:>5} {mine[0].changes:>8,} {subs * mine[0].changes:>11,} {runs:>24} "
              f"{median:>8,.0f}  {relayed:>9.2f}s  {met(median >= TARGET_RATE)}")
        cpu = {k: statistics.median(r.cpu[k] for r in mine) for k in CPU_KINDS}
        print(f"{'':>5} CPU s per 1,000 deliveries (median): "
              + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    if latency is None:
        return
    ms = latency.millis
    print(f"\nlatency: tier change committed (created_at) to webhook received, "
          f"{latency.count:,} changes at {latency.achieved_rate:,.1f}/s "
          f"(target p99 <= {TARGET_P99_MS:.0f} ms)")
    print(f"  received {len(ms):,} (missing {latency.missing}): p50 {quantile(ms, 0.5):.1f} ms, "
          f"p90 {quantile(ms, 0.9):.1f} ms, p99 {quantile(ms, 0.99):.1f} ms, "
          f"max {max(ms, default=math.nan):.1f} ms  "
          f"{met(quantile(ms, 0.99) <= TARGET_P99_MS and not latency.missing)}")
    total, count = latency.delivery_hist
    relay_total, relay_count = latency.relay_hist
    print(f"  notifier's tierflow_webhook_delivery_seconds: count {count:,.0f}, "
          f"sum {total:.2f}s, mean {total / max(count, 1) * 1000:.1f} ms, "
          f"p99 bucket <= {latency.delivery_p99_bucket * 1000:g} ms")
    print(f"  notifier's tierflow_notifier_relay_seconds (to the broker's ack): "
          f"count {relay_count:,.0f}, mean {relay_total / max(relay_count, 1) * 1000:.1f} ms")
    print("  CPU s per 1,000 changes: "
          + ", ".join(f"{k} {v:.2f}" for k, v in latency.cpu.items()))


# --- orchestration ------------------------------------------------------------------------

async def bench_all(found: Servers, tmp: Path, args: argparse.Namespace) -> None:
    """Migrate, start the notifier and the receiver, run the phases, report, stop them."""
    db_url, bootstrap = found.db_url, found.bootstrap
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    await upgrade(db_url)
    await machine_facts(db_url)
    settings = notifier_settings(db_url, bootstrap, args)
    print(f"notifier: relay_batch {settings.relay_batch}, relay_idle_ms "
          f"{settings.relay_idle_ms}, webhook_concurrency {settings.webhook_concurrency} "
          f"(per subscription), webhook_poll_ms {settings.webhook_poll_ms}, "
          f"webhook_timeout_s {settings.webhook_timeout_s:g}; one process")
    print("receiver: aiohttp.web on loopback in its own process, 200 at once")
    print(f"targets: >= {TARGET_RATE:,.0f} deliveries/s; p99 <= {TARGET_P99_MS:.0f} ms "
          f"at {args.rate:g} changes/s", flush=True)
    notifier = notifier_service(settings, tmp)
    receiver = Receiver(tmp)
    conn = await connect(db_url)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            receiver.start()
            notifier.start()
            await receiver.ready(client)
            await notifier.ready(timeout=60)
            bench = Bench(args, found, conn, client, notifier, receiver)
            results = []
            if args.runs:
                print("\n1. throughput", flush=True)
            for run in range(1, args.runs + 1):
                for subs, changes in zip(args.subscriptions, args.changes, strict=True):
                    results.append(await throughput_run(bench, subs, changes, run))
            latency = None
            if args.seconds > 0:
                print("\n2. latency", flush=True)
                latency = await latency_run(bench)
            report(results, latency)
    finally:
        notifier.stop()
        log_problems(notifier)
        receiver.stop()
        await conn.close()


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="throughput runs per count")
    parser.add_argument("--subscriptions", type=int, nargs="+", default=[1, 10],
                        help="subscription counts of the throughput runs")
    parser.add_argument("--changes", type=int, nargs="+", default=[20_000, 4_000],
                        help="tier changes per throughput run, one per subscription count")
    parser.add_argument("--rate", type=float, default=200.0, help="latency: changes/s")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="latency: how long (0 skips it)")
    parser.add_argument("--concurrency", type=int, help="TIERFLOW_WEBHOOK_CONCURRENCY")
    parser.add_argument("--relay-batch", type=int, help="TIERFLOW_RELAY_BATCH")
    parser.add_argument("--relay-idle-ms", type=int, help="TIERFLOW_RELAY_IDLE_MS")
    parser.add_argument("--poll-ms", type=int, help="TIERFLOW_WEBHOOK_POLL_MS")
    parser.add_argument("--analyze", action="store_true",
                        help="ANALYZE webhook_deliveries once 1,000 deliveries of a throughput "
                             "run are queued (what the notifier would do after a large fan-out)")
    parser.add_argument("--receiver", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver is None and len(args.subscriptions) != len(args.changes):
        parser.error("give one --changes per --subscriptions count")
    return args


def main() -> None:
    """Start or find the servers, run the benchmark, stop what was started."""
    args = parse_args()
    if args.receiver is not None:
        run_receiver(args.receiver)
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tierflow-bench-webhooks-") as tmp, \
            servers(Path(tmp)) as found:
        try:
            asyncio.run(bench_all(found, Path(tmp), args))
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("\ninterrupted: stopping what was started", flush=True)
    print(f"total wall time {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
