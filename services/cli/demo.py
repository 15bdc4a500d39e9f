"""`tierflow demo`: `up`, then a generated history through ingest, then the tier distribution."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from services.cli.banner import banner_lines
from services.cli.client import api_client, body_of, failure
from services.cli.config import CliError
from services.cli.demo_data import generate
from services.cli.lifecycle import StopSignal, install_signals, until_stopped
from services.cli.output import Progress, say
from services.cli.scrape import GRADED, read_metric
from services.cli.send import BatchSender, SendReport, batched, send_all
from services.cli.up import Ports, Supervisor, UpOptions, load_settings
from shared.settings import CommonSettings

Sample = tuple[float, float]  # (monotonic seconds, events the grader has consumed)


@dataclass(frozen=True)
class DemoOptions:
    """How big a history, which seed, and whether to keep running afterwards."""

    customers: int = 3000
    seed: int = 42
    exit_after: bool = False
    concurrency: int = 4


def peak_rate(samples: list[Sample], *, window: float = 1.0) -> float | None:
    """The highest rate over any stretch of at least `window` seconds; None if too few samples."""
    best: float | None = None
    start = 0
    for end in range(len(samples)):
        while start + 1 < end and samples[end][0] - samples[start + 1][0] >= window:
            start += 1
        elapsed = samples[end][0] - samples[start][0]
        if elapsed >= window:
            rate = (samples[end][1] - samples[start][1]) / elapsed
            best = rate if best is None else max(best, rate)
    return best


def distribution_table(doc: dict[str, Any], *, width: int = 30) -> list[str]:
    """Per ladder, each tier's customer count, share and a bar."""
    lines = [f"{doc.get('customers', 0):,} customers"]
    for ladder, tiers in (doc.get("ladders") or {}).items():
        total = sum(tiers.values()) or 1
        lines += ["", f"  {ladder}"]
        for tier, count in tiers.items():
            share = count / total
            bar = "█" * round(share * width)
            lines.append(f"    {tier:<14} {count:>8,}  {share * 100:5.1f}%  {bar}")
    return lines


async def graded(client: httpx.AsyncClient, consumer_urls: list[str]) -> float | None:
    """Events the grader's consumers have consumed, all together (None: none answered)."""
    counts = [await read_metric(client, url, GRADED) for url in consumer_urls]
    answered = [count for count in counts if count is not None]
    return sum(answered) if answered else None


async def sample_graded(client: httpx.AsyncClient, consumer_urls: list[str],
                        samples: list[Sample]) -> None:
    """Record the consumers' consumed-events counters a few times a second, until
    cancelled."""
    while True:
        count = await graded(client, consumer_urls)
        if count is not None:
            samples.append((time.monotonic(), count))
        await asyncio.sleep(0.25)  # sampling interval; the caller bounds the wait


async def wait_graded(samples: list[Sample], *, baseline: float, events: int, within: float,
                      started: float, grader_log: str) -> float:
    """Until the counter passed baseline + events; the instant it did."""
    progress = Progress("grading", events, started=started)
    deadline = time.monotonic() + within
    while True:
        at, count = samples[-1] if samples else (time.monotonic(), baseline)
        progress.set(int(count - baseline))
        if count >= baseline + events:
            progress.finish()
            return at
        if time.monotonic() > deadline:
            progress.finish()
            raise CliError(f"the grader consumed {count - baseline:,.0f} of {events:,} events in "
                           f"{within:.0f}s; see {grader_log}")
        await asyncio.sleep(0.1)  # polling interval of a deadline-bounded wait


@dataclass(frozen=True)
class Timings:
    """When the demo's events were sent and graded (monotonic seconds)."""

    accepted: int
    started: float
    sent_at: float
    graded_at: float
    peak: float | None


def rate_lines(t: Timings) -> list[str]:
    """Ingest's rate, and grading's end to end and at the grader's own peak."""
    sending = max(t.sent_at - t.started, 1e-9)
    grading = max(t.graded_at - t.started, 1e-9)
    peak = f"; grader peak {t.peak:,.0f} events/s" if t.peak else ""
    return [
        f"ingest:  {t.accepted:,} events accepted in {sending:.1f}s "
        f"({t.accepted / sending:,.0f} events/s)",
        f"grading: all graded {grading:.1f}s after the first send "
        f"({t.accepted / grading:,.0f} events/s end to end{peak})",
    ]


async def play(system: Supervisor, client: httpx.AsyncClient, options: DemoOptions,
               out: Callable[[str], None] = say) -> None:
    """Send the history, wait until it is graded, print rates and the distribution."""
    grader = system.url("grader")
    events = generate(options.customers, seed=options.seed, now=datetime.now(UTC))
    out(f"sending {len(events):,} events of {options.customers:,} customers "
        f"(seed {options.seed}, two years of history)…")
    timings = await send_and_grade(system, client, events, concurrency=options.concurrency)
    for line in rate_lines(timings):
        out(line)
    response = await client.get(f"{grader}/v1/stats/distribution")
    if response.status_code != 200:
        raise failure("grader", response)
    for line in ["", "Tier distribution:", *distribution_table(body_of(response)), ""]:
        out(line)
    sample = events[0]["customer_id"]
    out(f"Look a customer up: curl -H 'Authorization: Bearer <key>' {grader}/v1/customers/{sample}")


async def send_and_grade(system: Supervisor, client: httpx.AsyncClient,
                         events: list[dict[str, Any]], *, concurrency: int) -> Timings:
    """Send through ingest while sampling the grader's counter; return once all are graded."""
    consumers = system.consumer_urls()
    baseline = await graded(client, consumers) or 0.0
    samples: list[Sample] = []
    sampler = asyncio.create_task(sample_graded(client, consumers, samples))
    try:
        report, started, sent_at = await _send(client, system.url("ingest"), events, concurrency)
        graded_at = await wait_graded(
            samples, baseline=baseline, events=report.accepted, started=started,
            within=max(120.0, len(events) / 200),
            grader_log=str(system.options.data_dir / "logs" / "grader-consumer-*.log"))
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    return Timings(report.accepted, started, sent_at, graded_at, peak_rate(samples))


async def _send(client: httpx.AsyncClient, ingest: str, events: list[dict[str, Any]],
                concurrency: int) -> tuple[SendReport, float, float]:
    report = SendReport()
    progress = Progress("ingest", len(events))
    sender = BatchSender(client, ingest, report)
    started = time.monotonic()
    items = ((event["event_id"], event) for event in events)
    await send_all(sender, batched(items, 1000), concurrency=concurrency,
                   on_batch=lambda: progress.set(report.done))
    sent_at = time.monotonic()
    progress.set(report.done)
    progress.finish()
    if report.rejected:
        for line in report.summary_lines(sent_at - started):
            say(line)
    return report, started, sent_at


def run(up: UpOptions, options: DemoOptions) -> int:
    """`tierflow demo`: exit 0 once shown (`--exit`) or after Ctrl-C."""
    settings, ports = load_settings()
    return asyncio.run(_run(up, options, settings=settings, ports=ports))


async def _run(
    up: UpOptions, options: DemoOptions, *, settings: CommonSettings, ports: Ports
) -> int:
    stop = StopSignal()
    install_signals(stop, say=say)
    async with Supervisor(up, settings=settings, ports=ports, stop=stop) as system:
        if system.api_key is None:
            raise CliError("the demo needs a key with the admin scope; TIERFLOW_API_KEYS has none")
        async with api_client(system.api_key) as client:
            await until_stopped(play(system, client, options), stop)
        if options.exit_after:
            return 0
        for line in banner_lines(system.summary(), now=datetime.now(UTC)):
            say(line)
        await system.wait()
    return 0
