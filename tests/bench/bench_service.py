"""Whole-system benchmark: ingest latency, 202-to-tier-applied, and lookups, via `tierflow up`.

Run: `.venv/bin/python tests/bench/bench_service.py [--quick] [--runs R] [--customers N]
[--rate EPS] [--seconds S] [--single] [--lookup-seconds L] [--metrics-url URL ...]`.
Prints figures; it is not a test. Each run starts `tierflow up` on free ports in a fresh
temporary data dir (embedded PostgreSQL and broker: TIERFLOW_DATABASE_URL,
TIERFLOW_KAFKA_BOOTSTRAP and TIERFLOW_API_KEYS are removed from its environment).

The grader runs as an API process (lookups, stats, policy; TIERFLOW_GRADER_PORT) and
TIERFLOW_GRADER_CONSUMERS (default 2) consumer processes, each serving /healthz, /readyz and
/metrics only. This script gives the consumers a free run of ports right after the API's
(TIERFLOW_GRADER_CONSUMER_PORT = API port + 1; a `tierflow up` from before that setting
existed put them there anyway) and takes the URL each one really serves from the "Uvicorn
running on" line of its log, <data-dir>/logs/grader-consumer-N.log. The grading metrics (end-to-end
histogram and max gauge, events_total, batch sizes) are scraped from the consumers and
summed over them (the max gauge: the largest); lookups and `--graded-by distribution` go to
the API process. Each run then does:

1. load: N customers (one event each) through `POST /v1/events/batch`, until all are graded
   (after one warm-up event: /readyz can be 200 before the grader's consumer has partitions);
2. lookups, idle: `GET /v1/customers/{id}` and `POST /v1/customers/lookup` (1,000 ids), 32
   connections, L seconds each, with wrk (httpx in a child process if wrk is missing);
3. latency: an open-loop paced load of EPS events/s for S seconds (a batch every 10 ms, or
   one event per POST with --single) over keep-alive connections opened beforehand; ingest's
   response times as the client sees them and as its own histogram has them, and the
   grader's `tierflow_grader_end_to_end_seconds` (Kafka timestamp to effect committed)
   scraped before and after;
4. lookups under load: the same paced load again while the lookups of step 2 run.

Every phase also prints the CPU used by each process of the system, by this script, and by
everything else on the machine ("other"): a busy neighbour shows up there.

Then SIGINT (`tierflow up` drains and exits), SIGKILL if it does not within a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
import psutil  # type: ignore[import-untyped]  # a dependency of pgserver
from prometheus_client.parser import text_string_to_metric_families

from services.cli.scrape import GRADED, metric_sum
from services.cli.send import BatchSender, SendReport, batched, send_all
from shared.embedded import PASSWORD_FILE, free_port

READY_WITHIN_S = 180.0
STOP_WITHIN_S = 120.0
GRADED_WITHIN_S = 600.0
POLL_S = 0.25
TICK_S = 0.01
REQUEST_TIMEOUT_S = 10.0
SINGLE_CONNECTIONS = 256  # to ingest, opened in advance: the most requests in flight
BATCH_CONNECTIONS = 64
LOAD_BATCH = 1000
LOOKUP_IDS = 1000
E2E = "tierflow_grader_end_to_end_seconds"
E2E_MAX = "tierflow_grader_end_to_end_max_seconds"
INGEST_LATENCY = "tierflow_ingest_request_seconds"
BATCH_SIZE = "tierflow_grader_batch_size"
BATCH_SECONDS = "tierflow_grader_batch_seconds"
STRIPPED_ENV = ("TIERFLOW_DATABASE_URL", "TIERFLOW_KAFKA_BOOTSTRAP", "TIERFLOW_API_KEYS",
                "TIERFLOW_API_KEY", "TIERFLOW_INGEST_URL", "TIERFLOW_GRADER_URL")
SERVING = re.compile(r"Uvicorn running on (http://\S+)")
JSON = {"Content-Type": "application/json"}  # for httpx requests
CATEGORIES = ("shoes", "apparel", "electronics", "grocery", "beauty", "home", "toys", "books")
CHANNELS = ("app", "web", "store", "call-center")
ACTIONS = ("login", "view", "review", "share", "referral")


# --- events (as in bench_grader.py, copied so this script needs no grader internals) -----

def event(rng: random.Random, event_id: str, customer: str, now: datetime) -> dict[str, object]:
    """One realistic event: mostly purchases, some refunds, interactions and feedback."""
    when = now - timedelta(seconds=rng.uniform(60, 365 * 86400))
    base = {"event_id": event_id, "customer_id": customer,
            "occurred_at": when.isoformat(), "source": "bench"}
    roll = rng.random()
    if roll < 0.78:
        data: dict[str, object] = {"amount": f"{rng.lognormvariate(5, 1):.2f}", "currency": "CNY",
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


# --- the system under test: `tierflow up` as a subprocess --------------------------------

@dataclass
class System:
    """A running `tierflow up`: its process, URLs, key and what it printed."""

    proc: subprocess.Popen[bytes]
    data_dir: Path
    urls: dict[str, str]
    lines: list[str] = field(default_factory=list)
    banner: threading.Event = field(default_factory=threading.Event)
    key: str = ""
    consumer_urls: list[str] = field(default_factory=list)
    metrics_urls: list[str] = field(default_factory=list)

    def printed(self, label: str) -> str:
        """The rest of the banner line starting with `label` ("" if none)."""
        for line in self.lines:
            if line.strip().startswith(label + " "):
                return line.strip()[len(label):].strip()
        return ""


def consumer_count() -> int:
    """How many grader consumer processes `tierflow up` starts (as its settings read it)."""
    return int(os.environ.get("TIERFLOW_GRADER_CONSUMERS", "2"))


def port_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port (the same reuse rule as `up`)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def grader_ports(consumers: int) -> int:
    """A grader API port whose next `consumers` ports are free too (`up` puts them there)."""
    for _ in range(100):
        base = free_port()
        if base + consumers <= 65535 and all(port_free(base + i)
                                              for i in range(1, consumers + 1)):
            return base
    raise RuntimeError(f"no free run of {consumers + 1} ports for the grader")


def start_system(data_dir: Path) -> System:
    """Spawn `tierflow up` in its own session, on free ports, its output copied to a log."""
    consumers = consumer_count()
    grader = grader_ports(consumers)
    taken = set(range(grader, grader + consumers + 1))
    ports = {"grader": grader}
    for name in ("ingest", "notifier"):
        while (port := free_port()) in taken:
            continue  # one of the consumers' ports: pick again
        ports[name] = port
        taken.add(port)
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED_ENV}
    env.update({f"TIERFLOW_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    env["TIERFLOW_GRADER_CONSUMER_PORT"] = str(grader + 1)
    tierflow = Path(sys.executable).with_name("tierflow")
    data_dir.mkdir(parents=True)
    proc = subprocess.Popen(  # cwd: no stray .env is read
        [str(tierflow), "up", "--data-dir", str(data_dir)], cwd=data_dir.parent, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    system = System(proc, data_dir, urls, consumer_urls=[
        f"http://127.0.0.1:{grader + i}" for i in range(1, consumers + 1)])
    threading.Thread(target=copy_output, args=(system, data_dir.parent / "up.log"),
                     daemon=True).start()
    return system


def copy_output(system: System, log: Path) -> None:
    """Keep every line `tierflow up` prints, note when its banner is complete."""
    assert system.proc.stdout is not None
    with log.open("w") as out:
        for raw_line in system.proc.stdout:
            line = raw_line.decode(errors="replace").rstrip("\n")
            system.lines.append(line)
            out.write(line + "\n")
            out.flush()
            if line.startswith("Ctrl-C stops everything"):
                system.banner.set()


def wait_ready(system: System) -> None:
    """Poll every /readyz until 200, wait for the banner (`up` prints it once every process
    is ready), then find the consumers in their logs and check them too; fail if `up` dies
    or is late."""
    deadline = time.monotonic() + READY_WITHIN_S
    poll_ready(system, dict(system.urls), deadline)
    if not system.banner.wait(timeout=max(deadline - time.monotonic(), 1.0)):
        raise TimeoutError("services ready, but tierflow up printed no banner")
    system.consumer_urls = consumers_serving(system)
    poll_ready(system, {f"grader-consumer-{i}": url
                        for i, url in enumerate(system.consumer_urls, start=1)}, deadline)
    system.key = (system.data_dir / "api-key").read_text().strip()


def consumers_serving(system: System) -> list[str]:
    """The URL of each grader consumer, from the last "Uvicorn running on" line of its log
    (the expected one, with a warning, when a log has none); warns if the count differs."""
    logs = sorted((system.data_dir / "logs").glob("grader-consumer-*.log"),
                  key=lambda path: int(path.stem.rsplit("-", 1)[1]))
    if len(logs) != len(system.consumer_urls):
        print(f"  warning: {len(system.consumer_urls)} grader consumers expected "
              f"(TIERFLOW_GRADER_CONSUMERS), {len(logs)} consumer logs in "
              f"{system.data_dir / 'logs'}")
    found = []
    for i, log in enumerate(logs):
        urls = SERVING.findall(log.read_text(errors="replace"))
        if urls:
            found.append(urls[-1])
        elif i < len(system.consumer_urls):
            print(f"  warning: no 'Uvicorn running on' in {log}: assuming "
                  f"{system.consumer_urls[i]}")
            found.append(system.consumer_urls[i])
    if found != system.consumer_urls[:len(found)]:
        print(f"  note: consumers serve at {found}, not where expected "
              f"({system.consumer_urls}): scraping where they serve")
    return found or system.consumer_urls


def poll_ready(system: System, pending: dict[str, str], deadline: float) -> None:
    """Until every URL's /readyz answers 200 (before the deadline, while `up` runs)."""
    with httpx.Client(timeout=2.0) as client:
        while pending:
            if system.proc.poll() is not None:
                raise RuntimeError(f"tierflow up exited with {system.proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {READY_WITHIN_S:.0f}s: {sorted(pending)}")
            for name, url in list(pending.items()):
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{url}/readyz").status_code == 200:
                        del pending[name]
            if pending:
                time.sleep(POLL_S)  # poll interval of a deadline-bounded wait


def stop_system(system: System) -> None:
    """SIGINT (drain, then stop); after the deadline SIGKILL everything it started."""
    if system.proc.poll() is None:
        children = [p.pid for p in psutil.Process(system.proc.pid).children(recursive=True)]
        system.proc.send_signal(signal.SIGINT)
        try:
            system.proc.wait(timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            print(f"tierflow up did not stop within {STOP_WITHIN_S:.0f}s: killing it")
            force_kill(system, children)
    tail = system.lines[-3:]
    print(f"tierflow up exited with {system.proc.returncode}; last words: {' | '.join(tail)}")


def force_kill(system: System, children: list[int]) -> None:
    """SIGKILL the process group of `up` and its children (each in its own session), and
    stop the embedded PostgreSQL (a daemon, found by its pid file) immediately."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(system.proc.pid, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(OSError, ValueError, IndexError):
        os.kill(postmaster(system), signal.SIGQUIT)  # PostgreSQL's immediate shutdown
    system.proc.wait()


def postmaster(system: System) -> int:
    """The embedded PostgreSQL's pid, from its pid file (it runs as a daemon)."""
    return int((system.data_dir / "pg" / "postmaster.pid").read_text().split()[0])


def role(proc: psutil.Process, system: System) -> str:
    """What a process of the system is: grader-api, grader-consumer-N (N as in its log's
    name: the Nth port after the API's), ingest, notifier, postgres, broker, …"""
    cmd = " ".join(proc.cmdline())
    if "services.grader" in cmd:
        with contextlib.suppress(psutil.Error, KeyError):
            env = proc.environ()
            if env["TIERFLOW_GRADER_ROLE"] == "consumer":
                return consumer_name(system, env["TIERFLOW_GRADER_PORT"])
        return "grader-api"
    for name in ("ingest", "notifier"):
        if f"services.{name}" in cmd:
            return name
    if "postgres" in cmd:
        return "postgres"
    return "broker" if "tansu" in cmd else proc.name()


def consumer_name(system: System, port: str) -> str:
    """grader-consumer-N for the consumer listening on `port`."""
    urls = [urlsplit(url).port for url in system.consumer_urls]
    return f"grader-consumer-{urls.index(int(port)) + 1}" if int(port) in urls else "grader-?"


def cpu_seconds(system: System) -> dict[int, tuple[str, float]]:
    """Per pid of the system (postgres: all its processes), role and CPU seconds so far."""
    procs = psutil.Process(system.proc.pid).children(recursive=True)
    with contextlib.suppress(OSError, ValueError, IndexError, psutil.Error):
        pm = psutil.Process(postmaster(system))
        procs += [pm, *pm.children(recursive=True)]
    used: dict[int, tuple[str, float]] = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            used[proc.pid] = (role(proc, system), times.user + times.system)
    return used


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy, all cores."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0)
                 + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0))


def every_process() -> dict[int, tuple[str, float]]:
    """pid -> (command line, shortened; CPU seconds so far) of every process on the machine."""
    out: dict[int, tuple[str, float]] = {}
    for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        info = proc.info
        if info["cpu_times"] is None:
            continue
        cmd = " ".join(info["cmdline"] or []) or str(info["name"])
        out[proc.pid] = (cmd[:70], info["cpu_times"].user + info["cpu_times"].system)
    return out


OTHER_SHOWN = 0.05  # cores: a process outside the system using more is named under "other"


class CpuMeter:
    """CPU per wall second of each role between creation and `shares()` (1.0 = one core),
    this script ("bench"), and everything else on the machine ("other": the load tool, and
    anything not part of this benchmark; the processes in it using over OTHER_SHOWN cores
    are named, as "other/<command line>"). Approximate: processes of the system that start
    and exit in between (short-lived backends) count under "other"."""

    def __init__(self, system: System) -> None:
        self.system, self.wall, self.busy = system, time.monotonic(), machine_busy()
        self.start, self.own = cpu_seconds(system), time.process_time()
        self.everyone = every_process()

    def shares(self) -> dict[str, float]:
        """Cores used on average by each role, by this script and by everything else."""
        wall = time.monotonic() - self.wall
        out: defaultdict[str, float] = defaultdict(float)
        mine = cpu_seconds(self.system)
        for pid, (name, seconds) in mine.items():
            out[name] += (seconds - self.start.get(pid, (name, 0.0))[1]) / wall
        out["bench"] = (time.process_time() - self.own) / wall
        out["other"] = max((machine_busy() - self.busy) / wall - sum(out.values()), 0.0)
        ours = {*mine, *self.start, os.getpid()}
        for pid, (cmd, seconds) in every_process().items():
            used = (seconds - self.everyone.get(pid, (cmd, 0.0))[1]) / wall
            if pid not in ours and used >= OTHER_SHOWN:
                out[f"other/{cmd}"] += used
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def consumers_cpu(shares: dict[str, float]) -> float | None:
    """Cores used by the grader's consumer processes together."""
    used = [v for k, v in shares.items() if k.startswith("grader-consumer-")]
    return sum(used) if used else None


def show_cpu(shares: dict[str, float]) -> str:
    """`grader-consumer-1 0.95, postgres 0.40, …` in cores; then what "other" was."""
    main = ", ".join(f"{k} {v:.2f}" for k, v in shares.items()
                     if v >= 0.005 and not k.startswith("other/"))
    named = [f"{k[len('other/'):]} {v:.2f}" for k, v in shares.items()
             if k.startswith("other/")]
    return main + (f"; in other: {'; '.join(named)}" if named else "")


def metrics_urls(system: System, args: argparse.Namespace) -> list[str]:
    """Grader metrics endpoints: the given ones, else every consumer's (found by
    `wait_ready`)."""
    if args.metrics_url:
        return list(args.metrics_url)
    return [f"{url}/metrics" for url in system.consumer_urls]


@contextmanager
def running(data_dir: Path, args: argparse.Namespace) -> Iterator[System]:
    """`tierflow up`, ready, for the duration of the block; always stopped afterwards."""
    system = start_system(data_dir)
    try:
        wait_ready(system)
        system.metrics_urls = metrics_urls(system, args)
        print(f"  tierflow up is ready: {system.urls}, broker {system.printed('broker')}")
        print(f"  grader metrics scraped ({len(system.consumer_urls)} consumer processes): "
              f"{' '.join(system.metrics_urls)}", flush=True)
        yield system
    except BaseException:
        print("--- last lines of tierflow up ---\n" + "\n".join(system.lines[-30:]))
        raise
    finally:
        stop_system(system)


# --- Prometheus histograms --------------------------------------------------------------

Buckets = dict[float, float]  # upper bound -> cumulative count (all label sets, all endpoints)


async def scrape_each(client: httpx.AsyncClient, urls: Sequence[str]) -> dict[str, str]:
    """URL -> text of every metrics endpoint that answers (a warning for the others)."""
    texts = {}
    for url in urls:
        try:
            response = await client.get(url, timeout=10.0)
            response.raise_for_status()
            texts[url] = response.text
        except httpx.HTTPError as exc:
            print(f"  warning: {url} did not answer ({exc!r})")
    return texts


async def scrape_all(client: httpx.AsyncClient, urls: Sequence[str]) -> list[str]:
    """The text of every metrics endpoint that answers (a warning for the others)."""
    return list((await scrape_each(client, urls)).values())


def histogram(texts: Sequence[str], name: str, labels: dict[str, str] | None = None) -> Buckets:
    """Cumulative bucket counts of `name`, summed over endpoints and matching label sets."""
    out: Buckets = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name != f"{name}_bucket":
                    continue
                if labels and any(s.labels.get(k) != v for k, v in labels.items()):
                    continue
                bound = float(s.labels["le"])
                out[bound] = out.get(bound, 0.0) + s.value
    return out


def gauges(texts: dict[str, str], name: str) -> dict[str, float]:
    """URL -> the largest sample of a gauge at that endpoint (endpoints without it left out)."""
    out: dict[str, float] = {}
    for url, text in texts.items():
        values = [s.value for f in text_string_to_metric_families(text)
                  for s in f.samples if s.name == name]
        if values:
            out[url] = max(values)
    return out


@dataclass
class PhaseMax:
    """A per-process "largest so far" gauge read before and after a phase: the phase's max
    is the largest value that rose during it; a process whose gauge did not rise saw nothing
    above its earlier max, which may still exceed the phase's (then `bounded_by` says so)."""

    phase: float | None  # the largest gauge that rose during the phase (None: none rose)
    lifetime: float | None  # the largest gauge after the phase, over all processes
    bounded_by: float | None  # the largest earlier max of a process whose gauge did not rise

    @classmethod
    def of(cls, before: dict[str, float], after: dict[str, float]) -> PhaseMax:
        """From the gauges of the same endpoints before and after."""
        rose = [v for url, v in after.items() if v > before.get(url, 0.0)]
        flat = [v for url, v in after.items() if v <= before.get(url, 0.0)]
        phase = max(rose) if rose else None
        above = max(flat) if flat and (phase is None or max(flat) > phase) else None
        return cls(phase, max(after.values()) if after else None, above)


def minus(after: Buckets, before: Buckets) -> Buckets:
    """What was observed between two scrapes."""
    return {b: after[b] - before.get(b, 0.0) for b in after}


def quantile(buckets: Buckets, q: float) -> float | None:
    """q-quantile, linearly interpolated inside its bucket (from the previous bound, or 0).
    In the +Inf bucket: the highest finite bound (the true value is above it)."""
    bounds = sorted(buckets)
    total = buckets.get(math.inf, 0.0)
    if not total:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if math.isinf(bound):
                return lower
            inside = buckets[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, buckets[bound]
    return lower


def highest_bound(buckets: Buckets) -> float | None:
    """The upper bound of the highest bucket that gained observations (inf if the +Inf one)."""
    bounds = sorted(buckets)
    previous = 0.0
    highest = None
    for bound in bounds:
        if buckets[bound] > previous:
            highest = bound
        previous = buckets[bound]
    return highest


@dataclass
class HistogramFigures:
    """p50/p99 (interpolated), max bucket bound and count of a histogram delta."""

    count: int
    p50: float | None
    p99: float | None
    max_bound: float | None
    max_gauge: float | None = None

    @classmethod
    def of(cls, buckets: Buckets, max_gauge: float | None = None) -> HistogramFigures:
        """Figures of one histogram delta."""
        return cls(int(buckets.get(math.inf, 0)), quantile(buckets, 0.5), quantile(buckets, 0.99),
                   highest_bound(buckets), max_gauge)


# --- loading customers, waiting until they are graded -----------------------------------

GradedCount = Callable[[httpx.AsyncClient], Awaitable[int]]


def by_distribution(grader_url: str) -> GradedCount:
    """Graded = customers the grader has stored (`GET /v1/stats/distribution`)."""
    async def count(client: httpx.AsyncClient) -> int:
        response = await client.get(f"{grader_url}/v1/stats/distribution", timeout=30.0)
        response.raise_for_status()
        return int(response.json()["customers"])
    return count


def by_events_metric(urls: Sequence[str]) -> GradedCount:
    """Graded = `tierflow_grader_events_total` summed over the grader metrics endpoints."""
    async def count(client: httpx.AsyncClient) -> int:
        texts = await scrape_all(client, urls)
        return int(sum(metric_sum(t, GRADED) or 0.0 for t in texts))
    return count


async def wait_count(client: httpx.AsyncClient, count: GradedCount, target: int,
                     label: str) -> float:
    """Poll until count >= target, within a deadline; the monotonic time it got there."""
    deadline = time.monotonic() + GRADED_WITHIN_S
    said = time.monotonic()
    while (done := await count(client)) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label}: only {done:,} of {target:,} after {GRADED_WITHIN_S}s")
        if time.monotonic() - said >= 5.0:
            said = time.monotonic()
            print(f"    {label}: {done:,}/{target:,}", flush=True)
        await asyncio.sleep(POLL_S)  # poll interval of a deadline-bounded wait
    return time.monotonic()


async def warm_up(client: httpx.AsyncClient, system: System, count: GradedCount) -> None:
    """One event, waited for until graded: /readyz can say ready before the grader's consumer
    has its partitions (the group join), and the load would be timed from before that."""
    rng, started = random.Random(), time.monotonic()
    customer = f"warmup-{uuid.uuid4().hex[:8]}"
    before = await count(client)
    response = await client.post(f"{system.urls['ingest']}/v1/events", headers=JSON,
                                 content=orjson.dumps(event(rng, customer, customer,
                                                            datetime.now(UTC))))
    response.raise_for_status()
    await wait_count(client, count, before + 1, "warm-up event graded")
    print(f"  warm-up: the first event took {time.monotonic() - started:.1f}s to be graded",
          flush=True)


@dataclass
class LoadResult:
    """How fast the initial customers went in and were graded."""

    customers: int
    ingest_eps: float
    graded_eps: float


async def load_customers(client: httpx.AsyncClient, system: System, ids: list[str],
                         args: argparse.Namespace) -> LoadResult:
    """One event per customer, in batches of 1,000 with several in flight; wait until graded."""
    rng, now = random.Random(ids[0]), datetime.now(UTC)
    items = [(c, event(rng, f"{c}-load", c, now)) for c in ids]
    count = (by_distribution(system.urls["grader"]) if args.graded_by == "distribution"
             else by_events_metric(system.metrics_urls))
    await warm_up(client, system, count)
    before = await count(client)
    report = SendReport()
    started = time.monotonic()
    await send_all(BatchSender(client, system.urls["ingest"], report),
                   batched(items, LOAD_BATCH), concurrency=args.load_concurrency,
                   on_batch=lambda: None)
    sent = time.monotonic()
    if report.rejected:
        print("\n".join("  " + line for line in report.summary_lines(sent - started)))
    graded = await wait_count(client, count, before + report.accepted, "graded")
    result = LoadResult(report.accepted, report.accepted / (sent - started),
                        report.accepted / (graded - started))
    print(f"  load: {result.customers:,} customers, ingest accepted {result.ingest_eps:,.0f} "
          f"events/s, all graded at {result.graded_eps:,.0f} events/s from the first send "
          f"(graded count by {args.graded_by})", flush=True)
    return result


# --- the paced (open-loop) sender --------------------------------------------------------

@dataclass
class Request:
    """One POST: its body and how many events it carries."""

    body: bytes
    events: int


def plan_requests(ids: list[str], tag: str, *, rate: float, seconds: float,
                  single: bool) -> list[list[Request]]:
    """Per 10 ms tick, the requests to send (built beforehand, off the measured path)."""
    rng, now = random.Random(tag), datetime.now(UTC)
    ticks: list[list[Request]] = []
    n = 0
    for k in range(int(seconds / TICK_S)):
        due = math.floor((k + 1) * rate * TICK_S) - math.floor(k * rate * TICK_S)
        events = [event(rng, f"{tag}-{n + i}", rng.choice(ids), now) for i in range(due)]
        n += due
        if single:
            ticks.append([Request(orjson.dumps(e), 1) for e in events])
        else:
            ticks.append([Request(orjson.dumps({"events": events}), due)] if events else [])
    return ticks


@dataclass
class SendStats:
    """What the paced sender saw."""

    planned_events: int = 0
    sent_events: int = 0
    accepted: int = 0
    not_accepted: int = 0  # rejected or unavailable
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    skipped: int = 0  # requests not sent: every connection was busy
    unfinished: int = 0  # requests still without an answer at the end (cancelled)
    worst_lag: float = 0.0  # how late the pacing loop ran behind its schedule, at worst
    send_seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def non_2xx(self) -> int:
        """Answers other than 2xx, and transport errors."""
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))

    def note(self, status: int, body: bytes, events: int) -> None:
        """Count the events a 202 or a batch's 200 accepted."""
        self.statuses[str(status)] += 1
        if status == 202:
            self.accepted += 1
        elif status == 200:
            accepted = int(orjson.loads(body).get("accepted", 0))
            self.accepted += accepted
            self.not_accepted += events - accepted


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class IngestConnections:
    """Keep-alive HTTP/1.1 connections to one ingest route, opened before the phase: a minimal
    client (one pre-built request head, Content-Length answers only) costing the sender tens
    of microseconds per request where httpx costs hundreds, which --single at 2,000/s needs.
    `free` is a stack (most recently used on top); None stands for a connection to reopen."""

    def __init__(self, url: str, path: str, key: str, size: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.head = (f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer "
                     f"{key}\r\nContent-Type: application/json\r\nContent-Length: ").encode()
        self.free: list[Conn | None] = [None] * size
        self.writers: list[asyncio.StreamWriter] = []

    async def connect(self) -> Conn:
        """A new connection (remembered, to be closed at the end)."""
        conn = await asyncio.open_connection(self.host, self.port)
        self.writers.append(conn[1])
        return conn

    async def open(self) -> None:
        """Open every connection now, so connecting is not part of the measurement."""
        self.free = [await self.connect() for _ in self.free]

    def close(self) -> None:
        """Close every connection ever opened."""
        for writer in self.writers:
            writer.close()

    async def post(self, conn: Conn | None, body: bytes) -> tuple[int, bytes, Conn | None]:
        """(status, body, the connection if reusable); once more on a fresh connection if the
        server had closed this one while idle (event ids make a resend harmless)."""
        for attempt in (1, 2):
            reader, writer = conn or await self.connect()
            try:
                writer.write(self.head + b"%d\r\n\r\n" % len(body) + body)
                head = await reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                writer.close()
                conn = None
                if attempt == 2:
                    raise
                continue
            length = CONTENT_LENGTH.search(head)
            answer = await reader.readexactly(int(length.group(1)) if length else 0)
            keep = b"connection: close" not in head.lower()
            return int(head[9:12]), answer, (reader, writer) if keep else None
        raise AssertionError("unreachable")


class PacedSender:
    """Sends each tick's requests at its time on the clock, whatever the answers do; a
    request finding no free connection is skipped (counted), not queued."""

    def __init__(self, pool: IngestConnections) -> None:
        self.pool = pool
        self.stats = SendStats()
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self, ticks: list[list[Request]], stop: asyncio.Event | None = None,
                  grace: float = 30.0) -> SendStats:
        """Send every tick (or until `stop`), then wait up to `grace` s for the answers."""
        loop = asyncio.get_running_loop()
        started, cpu = loop.time(), time.process_time()
        for k, requests in enumerate(ticks):
            if stop is not None and stop.is_set():
                break
            if (delay := started + k * TICK_S - loop.time()) > 0:
                await asyncio.sleep(delay)  # pacing: the next tick's time on the clock
            self.stats.worst_lag = max(self.stats.worst_lag, -delay)
            for request in requests:
                self._fire(request)
        self.stats.send_seconds = loop.time() - started + TICK_S
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=grace)
            for task in pending:
                task.cancel()
            self.stats.unfinished = len(pending)
        self.stats.cpu_seconds = time.process_time() - cpu
        return self.stats

    def _fire(self, request: Request) -> None:
        self.stats.planned_events += request.events
        if not self.pool.free:
            self.stats.skipped += 1
            return
        self.stats.sent_events += request.events
        task = asyncio.create_task(self._one(request, self.pool.free.pop()))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _one(self, request: Request, conn: Conn | None) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, body, conn = await self.pool.post(conn, request.body)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            self.stats.statuses[type(exc).__name__] += 1
            self.pool.free.append(None)
            return
        self.stats.latencies.append(time.perf_counter() - started)
        self.pool.free.append(conn)
        self.stats.note(status, body, request.events)


# --- a measured load phase ---------------------------------------------------------------

@dataclass
class LatencyResult:
    """One paced phase: the sender's view, ingest's own histogram, the grader's end-to-end."""

    send: SendStats
    ingest: HistogramFigures
    e2e: HistogramFigures
    e2e_mean: float | None
    batch_size: HistogramFigures
    batch_seconds: HistogramFigures
    e2e_buckets: Buckets = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    e2e_max: PhaseMax = field(default_factory=lambda: PhaseMax(None, None, None))
    e2e_per_process: list[int] = field(default_factory=list)  # events, per grader endpoint

    def client_ms(self, q: float) -> float | None:
        """A quantile (nearest rank; 1.0 = max) of ingest's response time seen by the client."""
        values = sorted(self.send.latencies)
        if not values:
            return None
        return values[min(int(q * len(values)), len(values) - 1)] * 1000

    @property
    def achieved_eps(self) -> float:
        """Events sent per second of sending."""
        return self.send.sent_events / self.send.send_seconds


@dataclass
class Snapshot:
    """The histograms at one moment."""

    e2e: Buckets  # summed over the grader endpoints
    e2e_sum: float
    ingest: Buckets
    batch_size: Buckets
    batch_seconds: Buckets
    e2e_max: dict[str, float]  # URL -> its max gauge
    e2e_counts: dict[str, float]  # URL -> its end-to-end count


async def snapshot(client: httpx.AsyncClient, system: System, route: str) -> Snapshot:
    """Scrape the grader endpoints' end-to-end histogram and ingest's latency histogram."""
    each = await scrape_each(client, system.metrics_urls)
    texts = list(each.values())
    ingest = await scrape_all(client, [f"{system.urls['ingest']}/metrics"])
    e2e_sum = sum(metric_sum(t, f"{E2E}_sum") or 0.0 for t in texts)
    counts = {url: metric_sum(text, f"{E2E}_count") or 0.0 for url, text in each.items()}
    return Snapshot(histogram(texts, E2E), e2e_sum,
                    histogram(ingest, INGEST_LATENCY, {"route": route}),
                    histogram(texts, BATCH_SIZE), histogram(texts, BATCH_SECONDS),
                    gauges(each, E2E_MAX), counts)


async def measured_load(client: httpx.AsyncClient, system: System, ids: list[str],
                        args: argparse.Namespace,
                        during: Callable[[], Awaitable[Any]] | None = None) -> LatencyResult:
    """A paced load (for --seconds, or for as long as `during` runs), then its figures."""
    route = "/v1/events" if args.single else "/v1/events/batch"
    seconds = args.seconds if during is None else 2 * args.lookup_seconds + 60
    ticks = plan_requests(ids, uuid.uuid4().hex[:8], rate=args.rate, seconds=seconds,
                          single=args.single)
    before = await snapshot(client, system, route)
    pool = IngestConnections(system.urls["ingest"], route, system.key,
                             SINGLE_CONNECTIONS if args.single else BATCH_CONNECTIONS)
    await pool.open()
    meter = CpuMeter(system)
    try:
        stop = asyncio.Event()
        sending = asyncio.create_task(PacedSender(pool).run(ticks, stop))
        if during is not None:
            await asyncio.sleep(1.0)  # lead-in: the load is steady before the lookups start
            await during()
            stop.set()
        stats = await sending
    finally:
        pool.close()
    cpu = meter.shares()
    await wait_e2e(client, system, before, stats.accepted)
    result = figures(stats, before, await snapshot(client, system, route))
    result.cpu = cpu
    return result


async def wait_e2e(client: httpx.AsyncClient, system: System, before: Snapshot,
                   accepted: int) -> None:
    """Until the end-to-end histogram has counted every accepted event (within a deadline)."""
    async def count(c: httpx.AsyncClient) -> int:
        return int(sum(metric_sum(t, f"{E2E}_count") or 0.0
                       for t in await scrape_all(c, system.metrics_urls)))
    await wait_count(client, count, int(before.e2e.get(math.inf, 0)) + accepted, "e2e observed")


def figures(stats: SendStats, before: Snapshot, after: Snapshot) -> LatencyResult:
    """The phase's figures from the sender's stats and the before/after histograms."""
    e2e = minus(after.e2e, before.e2e)
    count = e2e.get(math.inf, 0.0)
    mean = (after.e2e_sum - before.e2e_sum) / count if count else None
    top = PhaseMax.of(before.e2e_max, after.e2e_max)
    return LatencyResult(stats, HistogramFigures.of(minus(after.ingest, before.ingest)),
                         HistogramFigures.of(e2e, top.phase), mean,
                         HistogramFigures.of(minus(after.batch_size, before.batch_size)),
                         HistogramFigures.of(minus(after.batch_seconds, before.batch_seconds)),
                         e2e, e2e_max=top, e2e_per_process=[
                             int(n - before.e2e_counts.get(url, 0.0))
                             for url, n in after.e2e_counts.items()])


def ms(seconds: float | None) -> str:
    """Milliseconds, or '-'."""
    if seconds is None:
        return "-"
    return ">30000" if math.isinf(seconds) else f"{seconds * 1000:,.1f}"


def show_buckets(buckets: Buckets) -> str:
    """`<=0.1s 120, <=0.25s 30, …`: the non-empty buckets of a cumulative histogram."""
    parts, below = [], 0.0
    for bound in sorted(buckets):
        if buckets[bound] > below:
            parts.append(f"<={bound:g}s {buckets[bound] - below:,.0f}")
        below = buckets[bound]
    return ", ".join(parts)


def show_latency(r: LatencyResult, label: str) -> None:
    """Print one phase's figures."""
    s = r.send
    print(f"  {label}: sent {s.sent_events:,} of {s.planned_events:,} planned events in "
          f"{s.send_seconds:.1f}s = {r.achieved_eps:,.0f} events/s; accepted {s.accepted:,}, "
          f"not accepted {s.not_accepted:,}; non-2xx {s.non_2xx:,} {dict(s.statuses)}; "
          f"skipped (all conns busy) {s.skipped:,}, unanswered {s.unfinished:,}; pacing lag max "
          f"{s.worst_lag * 1000:.1f} ms; sender CPU {s.cpu_seconds / s.send_seconds:.0%}")
    print(f"    ingest response, client: p50 {r.client_ms(0.5) or 0:,.1f} ms  p99 "
          f"{r.client_ms(0.99) or 0:,.1f} ms  max {r.client_ms(1.0) or 0:,.1f} ms")
    print(f"    ingest response, its histogram: p50 {ms(r.ingest.p50)} ms  p99 "
          f"{ms(r.ingest.p99)} ms  max bucket <= {ms(r.ingest.max_bound)} ms")
    e, top = r.e2e, r.e2e_max
    gauge = f"  max gauge {ms(top.phase)} ms (max over consumers of those that rose)"
    if top.bounded_by is not None:
        gauge += (f"; a consumer's gauge did not rise: its phase max is <= its earlier "
                  f"{ms(top.bounded_by)} ms")
    split = " + ".join(f"{n:,}" for n in r.e2e_per_process)
    print(f"    202 -> tier applied ({e.count:,} events = {split} per consumer): p50 "
          f"{ms(e.p50)} ms  p99 {ms(e.p99)} ms  max bucket <= {ms(e.max_bound)} ms  mean "
          f"{ms(r.e2e_mean)} ms{gauge}")
    print(f"    202 -> tier applied, events per bucket: {show_buckets(r.e2e_buckets)}")
    b, t = r.batch_size, r.batch_seconds
    print(f"    grader batches: {b.count:,}, size p50 ~{b.p50 or 0:,.0f} events, time p50 "
          f"{ms(t.p50)} ms p99 {ms(t.p99)} ms (interpolated)")
    print(f"    CPU while sending, in cores: {show_cpu(r.cpu)}", flush=True)


# --- lookups -----------------------------------------------------------------------------

@dataclass
class LookupResult:
    """One lookup load: throughput, latency, failures, and the load tool's own CPU use."""

    kind: str
    tool: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    errors: int
    tool_cpu: float  # CPU seconds per second (1.0 = one core busy)
    cpu: dict[str, float] = field(default_factory=dict)  # the system's, by role

    @property
    def rps(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds


@dataclass
class LookupTarget:
    """Where and how the lookups go."""

    grader_url: str
    key: str
    ids_path: Path
    ids: list[str]
    tool: str
    connections: int
    seconds: int


WRK_SCRIPT = """
local ids = {}
local batch = %(batch)d
local auth = "Bearer %(key)s"
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end
function init(args)
  for line in io.lines("%(ids)s") do ids[#ids + 1] = line end
  math.randomseed(os.time() * 1000 + seed)
end
function request()
  if batch == 0 then
    return wrk.format("GET", "/v1/customers/" .. ids[math.random(#ids)],
                      {["Authorization"] = auth})
  end
  local pick = {}
  for i = 1, batch do pick[i] = '"' .. ids[math.random(#ids)] .. '"' end
  return wrk.format("POST", "/v1/customers/lookup",
                    {["Authorization"] = auth, ["Content-Type"] = "application/json"},
                    '{"customer_ids":[' .. table.concat(pick, ",") .. ']}')
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%%d duration_us=%%d status=%%d errors=%%d " ..
    "p50_us=%%d p99_us=%%d max_us=%%d\\n", summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50),
    latency:percentile(99), latency.max))
end
"""


async def wrk_lookups(target: LookupTarget, kind: str) -> LookupResult:
    """wrk at `connections` for `seconds`; non-2xx as wrk counts them (status >= 400)."""
    script = target.ids_path.with_name(f"{kind}.lua")
    batch = 0 if kind == "get" else LOOKUP_IDS
    script.write_text(WRK_SCRIPT % {"batch": batch, "key": target.key, "ids": target.ids_path})
    threads = min(len(os.sched_getaffinity(0)), 4)
    argv = ["wrk", "-t", str(threads), "-c", str(target.connections), "-d",
            f"{target.seconds}s", "--timeout", "10s", "--latency", "-s", str(script),
            target.grader_url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), target.seconds + 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return parse_wrk(out.decode(errors="replace"), kind, cpu)


def parse_wrk(output: str, kind: str, cpu: float) -> LookupResult:
    """The figures from the `done()` line of the script."""
    line = next((ln for ln in output.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no figures:\n{output}")
    f = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    seconds = f["duration_us"] / 1e6
    return LookupResult(kind, "wrk", f["requests"], seconds, f["p50_us"] / 1000,
                        f["p99_us"] / 1000, f["max_us"] / 1000, f["status"], f["errors"],
                        cpu / seconds)


def httpx_lookups(target: LookupTarget, kind: str) -> LookupResult:
    """The fallback load generator; runs in a child process so it has a core of its own."""
    return asyncio.run(_httpx_lookups(target, kind))


async def _httpx_lookups(target: LookupTarget, kind: str) -> LookupResult:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    rng = random.Random()
    limits = httpx.Limits(max_connections=target.connections)
    headers = {"Authorization": f"Bearer {target.key}"}
    started, cpu = time.monotonic(), time.process_time()
    async with httpx.AsyncClient(base_url=target.grader_url, headers=headers, limits=limits,
                                 timeout=10.0) as client:
        async def worker() -> None:
            while time.monotonic() - started < target.seconds:
                t = time.perf_counter()
                try:
                    if kind == "get":
                        r = await client.get(f"/v1/customers/{rng.choice(target.ids)}")
                    else:
                        body = {"customer_ids": rng.choices(target.ids, k=LOOKUP_IDS)}
                        r = await client.post("/v1/customers/lookup", json=body)
                    statuses[str(r.status_code)] += 1
                    latencies.append(time.perf_counter() - t)
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
        await asyncio.gather(*(worker() for _ in range(target.connections)))
    seconds = time.monotonic() - started
    return httpx_result(kind, latencies, statuses, seconds, time.process_time() - cpu)


def httpx_result(kind: str, latencies: list[float], statuses: Counter[str], seconds: float,
                 cpu: float) -> LookupResult:
    """A LookupResult from raw latencies and status counts."""
    values = sorted(latencies) or [0.0]
    def at(q: float) -> float:
        return values[min(int(q * len(values)), len(values) - 1)] * 1000
    non_2xx = sum(n for s, n in statuses.items() if s.isdigit() and not s.startswith("2"))
    errors = sum(n for s, n in statuses.items() if not s.isdigit())
    return LookupResult(kind, "httpx", len(latencies), seconds, at(0.5), at(0.99), at(1.0),
                        non_2xx, errors, cpu / seconds)


async def one_lookup_load(target: LookupTarget, kind: str) -> LookupResult:
    """wrk, or the httpx fallback in a child process."""
    if target.tool == "wrk":
        return await wrk_lookups(target, kind)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return await asyncio.get_running_loop().run_in_executor(
            pool, httpx_lookups, target, kind)


async def lookup_suite(target: LookupTarget, system: System,
                       condition: str) -> dict[str, LookupResult]:
    """GET one customer, then POST 1,000 ids, each for `seconds`; printed as they finish."""
    results = {}
    for kind in ("get", "lookup"):
        meter = CpuMeter(system)
        r = await one_lookup_load(target, kind)
        r.cpu = meter.shares()
        results[kind] = r
        what = "GET /v1/customers/{id}" if kind == "get" else "POST lookup x1000"
        print(f"  lookups {condition}, {what}: {r.rps:,.0f} req/s ({r.requests:,} in "
              f"{r.seconds:.1f}s, {target.connections} conns, {r.tool})  p50 {r.p50_ms:,.1f} ms"
              f"  p99 {r.p99_ms:,.1f} ms  max {r.max_ms:,.1f} ms  non-2xx {r.non_2xx:,}  "
              f"socket errors {r.errors:,}  {r.tool} CPU {r.tool_cpu:.0%} of a core")
        print(f"    CPU in cores: {show_cpu(r.cpu)}", flush=True)
    return results


# --- one run -----------------------------------------------------------------------------

@dataclass
class RunResult:
    """Every figure of one run."""

    load: LoadResult
    latency: LatencyResult
    busy: LatencyResult
    idle_lookups: dict[str, LookupResult]
    busy_lookups: dict[str, LookupResult]


async def one_run(system: System, args: argparse.Namespace, run_dir: Path,
                  first: bool) -> RunResult:
    """Load, idle lookups, the latency phase, lookups under load."""
    tag = uuid.uuid4().hex[:8]
    ids = [f"c{tag}-{i}" for i in range(args.customers)]
    ids_path = run_dir / "ids.txt"
    ids_path.write_text("\n".join(ids) + "\n")
    target = LookupTarget(system.urls["grader"], system.key, ids_path, ids, args.tool,
                          args.connections, args.lookup_seconds)
    headers = {"Authorization": f"Bearer {system.key}"}
    async with httpx.AsyncClient(headers=headers, timeout=60.0) as client:
        if first:
            await machine_facts(system, args)
        load = await load_customers(client, system, ids, args)
        idle = await lookup_suite(target, system, "idle")
        latency = await measured_load(client, system, ids, args)
        show_latency(latency, f"steady {args.rate:,.0f} events/s")
        busy_lookups: dict[str, LookupResult] = {}

        async def lookups() -> None:
            busy_lookups.update(await lookup_suite(target, system, "under load"))
        busy = await measured_load(client, system, ids, args, during=lookups)
        show_latency(busy, "steady load while the lookups ran")
    return RunResult(load, latency, busy, idle, busy_lookups)


async def machine_facts(system: System, args: argparse.Namespace) -> None:
    """What the figures were measured on."""
    try:
        pg_dir = system.data_dir / "pg"
        conn = await asyncpg.connect(host=str(pg_dir), user="postgres", database="postgres",
                                     password=(pg_dir / PASSWORD_FILE).read_text().strip(),
                                     timeout=10)
        try:
            pg = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        pg = f"unknown ({exc!r})"
    cpus = len(os.sched_getaffinity(0))
    print(f"machine: {cpus} cpus usable ({os.cpu_count()} online), "
          f"Python {platform.python_version()}, PostgreSQL {pg}, {platform.platform()}; "
          f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"options: {args.customers:,} customers, {args.rate:,.0f} events/s for "
          f"{args.seconds:g}s ({'one event per POST' if args.single else 'a batch every 10 ms'})"
          f", lookups {args.connections} conns x {args.lookup_seconds}s with {args.tool}; "
          f"grader: an API process and {len(system.consumer_urls)} consumer processes; "
          f"everything (system and load tools) on this machine", flush=True)


# --- report ------------------------------------------------------------------------------

Getter = Callable[[RunResult], float | None]


def table_rows() -> list[tuple[str, Getter]]:
    """The summary table: label and how to get the figure from a run."""
    def s(x: float | None) -> float | None:
        return None if x is None or math.isinf(x) else x * 1000
    rows: list[tuple[str, Getter]] = [
        ("load: ingest accepted, events/s", lambda r: r.load.ingest_eps),
        ("load: graded, events/s", lambda r: r.load.graded_eps),
        ("steady: achieved send rate, events/s", lambda r: r.latency.achieved_eps),
        ("steady: non-2xx + transport errors", lambda r: r.latency.send.non_2xx),
        ("steady: ingest p50 ms (client)", lambda r: r.latency.client_ms(0.5)),
        ("steady: ingest p99 ms (client)", lambda r: r.latency.client_ms(0.99)),
        ("steady: ingest max ms (client)", lambda r: r.latency.client_ms(1.0)),
        ("steady: 202->applied p50 ms", lambda r: s(r.latency.e2e.p50)),
        ("steady: 202->applied p99 ms", lambda r: s(r.latency.e2e.p99)),
        ("steady: 202->applied max bucket ms", lambda r: s(r.latency.e2e.max_bound)),
        ("steady: 202->applied max gauge ms", lambda r: s(r.latency.e2e.max_gauge)),
        ("  (max gauge since start, all phases)", lambda r: s(r.latency.e2e_max.lifetime)),
        ("steady: 202->applied mean ms", lambda r: s(r.latency.e2e_mean)),
        ("steady: grader consumers CPU, cores", lambda r: consumers_cpu(r.latency.cpu)),
        ("steady: grader API CPU, cores", lambda r: r.latency.cpu.get("grader-api")),
        ("steady: postgres CPU, cores", lambda r: r.latency.cpu.get("postgres")),
        ("steady: other processes CPU, cores", lambda r: r.latency.cpu.get("other")),
        ("w/ lookups: ingest p99 ms (client)", lambda r: r.busy.client_ms(0.99)),
        ("w/ lookups: 202->applied p99 ms", lambda r: s(r.busy.e2e.p99)),
    ]
    for cond, pick in (("idle", lambda r: r.idle_lookups), ("busy", lambda r: r.busy_lookups)):
        for kind in ("get", "lookup"):
            rows += lookup_rows(f"{kind} {cond}", pick, kind)
    return rows


def lookup_rows(label: str, pick: Callable[[RunResult], dict[str, LookupResult]],
                kind: str) -> list[tuple[str, Getter]]:
    """Rows of one lookup load."""
    def get(attr: str) -> Getter:
        return lambda r: getattr(pick(r)[kind], attr) if kind in pick(r) else None
    return [(f"{label}: req/s", get("rps")), (f"{label}: p50 ms", get("p50_ms")),
            (f"{label}: p99 ms", get("p99_ms")), (f"{label}: max ms", get("max_ms")),
            (f"{label}: non-2xx", get("non_2xx")),
            (f"{label}: socket errors/timeouts", get("errors"))]


def report(results: list[RunResult]) -> None:
    """Per-run columns and the median of each figure."""
    runs = "".join(f"{'run ' + str(i):>11}" for i in range(1, len(results) + 1))
    print(f"\n{'figure':<40}{runs}{'median':>11}")
    for label, get in table_rows():
        values = [get(r) for r in results]
        known = [v for v in values if v is not None]
        median = statistics.median(known) if known else None
        cells = "".join(f"{fmt(v):>11}" for v in values)
        print(f"{label:<40}{cells}{fmt(median):>11}")
    print("202->applied: from the grader consumers' histograms (summed), delta over the "
          "phase; p50/p99 interpolated linearly inside the bucket, max bucket = upper bound of "
          "the highest non-empty bucket; max gauge = the largest per-consumer max that rose "
          "during the phase ('-': none rose, the phase's max is below an earlier one).")


def fmt(value: float | None) -> str:
    """A table cell."""
    if value is None:
        return "-"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"


# --- main --------------------------------------------------------------------------------

def ensure_wrk(args: argparse.Namespace) -> str:
    """'wrk' when it is there (installing it with apt-get if asked), else 'httpx'."""
    if args.tool == "httpx":
        return "httpx"
    if shutil.which("wrk") is None and args.install_wrk:
        install = ["apt-get", "install", "-y", "wrk"]
        if subprocess.run(install, check=False, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], check=False, capture_output=True)
            subprocess.run(install, check=False, capture_output=True)
    if shutil.which("wrk") is None:
        if args.tool == "wrk":
            raise SystemExit("wrk not found: apt-get install -y wrk (or --install-wrk)")
        print("wrk not found (apt-get install -y wrk, or --install-wrk): using httpx in a "
              "child process; its CPU use is printed")
        return "httpx"
    return "wrk"


def parse_args() -> argparse.Namespace:
    """Command-line options; --quick changes the defaults of those not given."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 2,000 customers, 10s, 5s")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--customers", type=int, help="default 20,000 (quick: 2,000)")
    p.add_argument("--rate", type=float, default=2000.0, help="events/s of the steady load")
    p.add_argument("--seconds", type=float, help="steady load duration (default 60, quick 10)")
    p.add_argument("--single", action="store_true", help="one event per POST /v1/events")
    p.add_argument("--lookup-seconds", type=int, help="per lookup load (default 15, quick 5)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--tool", choices=("auto", "wrk", "httpx"), default="auto")
    p.add_argument("--install-wrk", action="store_true", help="apt-get install wrk if missing")
    p.add_argument("--load-concurrency", type=int, default=4)
    p.add_argument("--graded-by", choices=("distribution", "metrics"), default="distribution",
                   help="how to know the load is graded: customer count, or events_total")
    p.add_argument("--metrics-url", action="append", metavar="URL",
                   help="a grader metrics endpoint (repeat; default: every grader consumer's "
                        "/metrics, where its log says it serves)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (data, logs)")
    args = p.parse_args()
    quick = {"customers": 2000, "seconds": 10.0, "lookup_seconds": 5}
    full = {"customers": 20_000, "seconds": 60.0, "lookup_seconds": 15}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main() -> None:
    """A fresh `tierflow up` per run; the table at the end."""
    args = parse_args()
    args.tool = ensure_wrk(args)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tierflow-bench-service-"))
    results = []
    try:
        for n in range(1, args.runs + 1):
            run_dir = work / f"run{n}"
            print(f"run {n}: starting tierflow up in {run_dir}", flush=True)
            with running(run_dir / "data", args) as system:
                results.append(asyncio.run(one_run(system, args, run_dir, first=n == 1)))
    finally:
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(results)
    print(f"total wall time {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
