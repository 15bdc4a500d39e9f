"""Posting events to ingest in batches: `tierflow send FILE|-`, and the demo's sender."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import orjson

from services.cli.client import api_client, body_of, failure, unreachable
from services.cli.config import CliError
from services.cli.lifecycle import first_error
from services.cli.output import Progress, warn

Item = tuple[str, object]  # (how to name it in messages, the event)
ATTEMPTS = 6
EXAMPLES = 5


@dataclass
class SendReport:
    """What happened to every event: counts, reject reasons, a few examples."""

    accepted: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        """Events with a final answer."""
        return self.accepted + self.rejected

    def reject(self, label: str, event_id: object, errors: Iterable[str]) -> None:
        """Count one rejected event and keep it as an example if there are few so far."""
        reasons = list(errors) or ["rejected"]
        self.rejected += 1
        self.reasons.update(reasons)
        if len(self.examples) < EXAMPLES:
            named = f" (event_id {event_id})" if event_id else ""
            self.examples.append(f"{label}{named}: {'; '.join(reasons)}")

    def summary_lines(self, seconds: float) -> list[str]:
        """The closing summary: totals and rate, then rejects by reason and the first few."""
        rate = self.done / max(seconds, 1e-9)
        lines = [f"sent {self.done:,} events: {self.accepted:,} accepted, {self.rejected:,} "
                 f"rejected in {seconds:.1f}s ({rate:,.0f} events/s)"]
        if self.rejected:
            lines.append("rejects by reason:")
            lines += [f"  {n:>8,}  {r}" for r, n in self.reasons.most_common(20)]
            lines.append("first rejects:")
            lines += [f"  {example}" for example in self.examples]
        return lines


def error_texts(result: dict[str, Any]) -> list[str]:
    """`field: reason` for each error of one batch result."""
    out = []
    for err in result.get("errors") or []:
        if isinstance(err, dict):
            out.append(f"{err.get('field', '(event)')}: {err.get('reason', err)}")
        else:
            out.append(str(err))
    return out


class TooLarge(Exception):
    """Ingest refused the body as too large: split the batch."""


class BatchSender:
    """Posts batches with retries (503/429/connection), splitting a batch that is too large."""

    def __init__(self, client: httpx.AsyncClient, ingest_url: str, report: SendReport) -> None:
        self.client, self.report = client, report
        self.base_url = ingest_url
        self.url = f"{ingest_url}/v1/events/batch"

    async def deliver(self, items: list[Item]) -> None:
        """Send `items` until each has a final answer, recording it in the report."""
        pending = items
        for attempt in range(ATTEMPTS):
            try:
                results = await self._post(pending)
            except TooLarge:
                if len(pending) == 1:
                    self.report.reject(pending[0][0], None, ["(event): too large for ingest"])
                    return
                half = len(pending) // 2
                await self.deliver(pending[:half])
                await self.deliver(pending[half:])
                return
            pending = self._settle(pending, results, final=attempt == ATTEMPTS - 1)
            if not pending:
                return
            await asyncio.sleep(backoff(attempt))  # backoff before resending

    def _settle(self, items: list[Item], results: list[Any], *, final: bool) -> list[Item]:
        """Record final answers; return the items ingest could not publish (to resend)."""
        retry = []
        for result in results:
            label, _ = items[int(result["index"])]
            status = result.get("status")
            if status == "accepted":
                self.report.accepted += 1
            elif status == "unavailable" and not final:
                retry.append(items[int(result["index"])])
            else:
                self.report.reject(label, result.get("event_id"), error_texts(result))
        return retry

    async def _post(self, items: list[Item]) -> list[Any]:
        body = orjson.dumps({"events": [event for _, event in items]})
        headers = {"Content-Type": "application/json"}
        for attempt in range(ATTEMPTS):
            last = attempt == ATTEMPTS - 1
            try:
                response = await self.client.post(self.url, content=body, headers=headers)
            except httpx.TransportError as exc:
                if last:
                    raise unreachable("ingest", self.base_url, exc) from None
                await asyncio.sleep(backoff(attempt))  # backoff before retrying
                continue
            if response.status_code == 200:
                results: list[Any] = body_of(response)["results"]
                return results
            if response.status_code == 413:
                raise TooLarge
            if response.status_code not in (429, 503) or last:
                raise failure("ingest", response)
            await asyncio.sleep(_retry_after(response, attempt))
        raise CliError("unreachable")  # the loop returns or raises on its last attempt


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (0-based): 0.5, 1, 2, 4, 5, 5…"""
    return min(0.5 * 2.0**attempt, 5.0)


def _retry_after(response: httpx.Response, attempt: int) -> float:
    try:
        seconds = float(response.headers.get("Retry-After", ""))
        return min(seconds, 10.0)
    except ValueError:
        return backoff(attempt)


def batched(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """Consecutive lists of at most `size` items."""
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def send_all(
    sender: BatchSender, batches: Iterable[list[Item]], *, concurrency: int,
    on_batch: Callable[[], None],
) -> None:
    """Post every batch, `concurrency` requests in flight."""
    shared = iter(batches)  # workers take turns pulling the next batch

    async def worker() -> None:
        for batch in shared:
            await sender.deliver(batch)
            on_batch()

    await first_error(*(worker() for _ in range(concurrency)))


def read_items(lines: Iterable[bytes], report: SendReport) -> Iterator[Item]:
    """Events from JSON lines; a line that is not JSON is rejected here and not sent."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            report.reject(f"line {number}", None, [f"(line): not valid JSON ({exc})"])


def count_events(path: Path) -> int:
    """Non-blank lines in a file, for the progress bar's total."""
    with path.open("rb") as source:
        return sum(1 for line in source if line.strip())


def run(source: str, *, url: str, key: str, concurrency: int, batch_size: int) -> int:
    """`tierflow send`: exit 0 when every event was accepted, 1 otherwise."""
    if source == "-":
        return asyncio.run(_send(sys.stdin.buffer, None, url=url, key=key,
                                 concurrency=concurrency, batch_size=batch_size))
    path = Path(source)
    if not path.is_file():
        raise CliError(f"no such file: {source}", exit_code=2)
    with path.open("rb") as lines:
        return asyncio.run(_send(lines, count_events(path), url=url, key=key,
                                 concurrency=concurrency, batch_size=batch_size))


async def _send(
    lines: BinaryIO, total: int | None, *, url: str, key: str, concurrency: int, batch_size: int
) -> int:
    report = SendReport()
    progress = Progress("sending", total)
    started = time.monotonic()
    async with api_client(key) as client:
        sender = BatchSender(client, url.rstrip("/"), report)
        await send_all(sender, batched(read_items(lines, report), batch_size),
                       concurrency=concurrency, on_batch=lambda: progress.set(report.done))
    progress.set(report.done)
    progress.finish()
    for line in report.summary_lines(time.monotonic() - started):
        warn(line)
    return 0 if report.rejected == 0 else 1
