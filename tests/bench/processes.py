"""The grader as N consumer processes (what `tierflow up` runs), measured from outside:
their committed-event counters, summed over /metrics."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from shared.embedded import free_port
from shared.settings import GraderSettings
from tests.processes import Service

OUTCOMES = ("applied", "duplicate", "dlq", "rerouted")


class GraderProcesses:
    """N `python -m services.grader` processes in the consumer role, one consumer group."""

    def __init__(self, settings: GraderSettings, count: int) -> None:
        self.log_dir = Path(tempfile.mkdtemp(prefix="tierflow-bench-graders-"))
        self.services = []
        for i in range(count):
            port = free_port()
            env = {
                "TIERFLOW_DATABASE_URL": settings.database_url.get_secret_value(),
                "TIERFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                "TIERFLOW_TOPIC_EVENTS": settings.topic_events,
                "TIERFLOW_TOPIC_DLQ": settings.topic_dlq,
                "TIERFLOW_TOPIC_TIER_CHANGES": settings.topic_tier_changes,
                "TIERFLOW_EVENTS_PARTITIONS": str(settings.events_partitions),
                "TIERFLOW_CONSUMER_GROUP": settings.consumer_group,
                "TIERFLOW_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
                "TIERFLOW_GRADER_ROLE": "consumer", "TIERFLOW_GRADER_PORT": str(port),
                "TIERFLOW_API_KEYS": json.dumps({"bench-admin-key-000001": ["admin"]}),
                "TIERFLOW_LOG_LEVEL": "WARNING",
            }
            service = Service("grader", env, port=port, log_dir=self.log_dir)
            service.log_path = self.log_dir / f"grader-{i}.log"
            self.services.append(service)

    async def start(self) -> None:
        """Start them all and wait until they answer."""
        for service in self.services:
            service.start()
        await asyncio.gather(*(s.ready(timeout=60) for s in self.services))

    def stop(self) -> None:
        """Stop them all."""
        for service in self.services:
            service.stop()

    async def committed(self, client: httpx.AsyncClient) -> int:
        """Events committed by all of them, whatever the outcome."""
        return int(await self.total(client, "tierflow_grader_events_total"))

    async def total(self, client: httpx.AsyncClient, metric: str) -> float:
        """A metric summed over every label set and process."""
        total = 0.0
        for service in self.services:
            text = (await client.get(f"{service.url}/metrics")).text
            for line in text.splitlines():
                if line.startswith((f"{metric}{{", f"{metric} ")):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    async def until(self, target: int, label: str, *, deadline_s: float) -> float:
        """Wait until `target` events are committed; events/s from the first commit seen."""
        async with httpx.AsyncClient() as client:
            start = await self.committed(client)
            first = 0.0
            deadline, said = time.monotonic() + deadline_s, 0.0
            while (done := await self.committed(client)) < target:
                if done > start and not first:
                    first = time.perf_counter()
                for service in self.services:
                    assert service.proc is not None and service.proc.poll() is None, \
                        service.log_tail()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{label}: only {done:,} of {target:,} committed")
                if time.monotonic() - said > 5:
                    said = time.monotonic()
                    print(f"    {label}: {done:,}/{target:,} committed", flush=True)
                await asyncio.sleep(0.02)  # polling interval of a deadline-bounded wait
        return (target - start) / (time.perf_counter() - (first or time.perf_counter()))


def cpu_seconds(graders: GraderProcesses) -> dict[str, float]:
    """CPU seconds used so far by the grader processes, PostgreSQL and the broker."""
    pids = {s.proc.pid for s in graders.services if s.proc is not None}
    used = {"graders": 0.0, "postgres": 0.0, "broker": 0.0}
    for proc in psutil.process_iter(["name", "pid", "cpu_times"]):
        times = proc.info["cpu_times"]
        if times is None:
            continue
        name = proc.info["name"] or ""
        kind = ("graders" if proc.info["pid"] in pids else "postgres" if name == "postgres"
                else "broker" if name.startswith("tansu") else "")
        if kind:
            used[kind] += times.user + times.system
    return used


def cpu_report(before: dict[str, float], after: dict[str, float], events: int) -> str:
    """Microseconds of CPU per event, by process kind."""
    return ", ".join(f"{kind} {(after[kind] - before[kind]) / events * 1e6:.1f}"
                     for kind in after) + " us of CPU per event"
