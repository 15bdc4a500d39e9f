"""On the way down: wait until the grader consumed what ingest accepted and the outbox is empty."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from shared.cli.scrape import CONSUMER_LAG, OUTBOX_BACKLOG, read_metric


async def pending_work(client: httpx.AsyncClient, lag_urls: list[str],
                       outbox_url: str | None) -> tuple[float, float]:
    """(consumer lag summed over the grader consumers, outbox backlog); a service or metric
    that does not answer counts as 0."""
    lag = 0.0
    for url in lag_urls:
        lag += max(await read_metric(client, url, CONSUMER_LAG) or 0.0, 0.0)
    backlog = await read_metric(client, outbox_url, OUTBOX_BACKLOG) if outbox_url else None
    return lag, max(backlog or 0.0, 0.0)


async def drain(
    *, lag_urls: list[str], outbox_url: str | None, within: float,
    forced: Callable[[], bool], out: Callable[[str], None], memory_broker: bool,
) -> bool:
    """Poll the metrics until lag and backlog are 0 (True) or the deadline/a second Ctrl-C."""
    deadline = time.monotonic() + within
    last_said = 0.0
    async with httpx.AsyncClient() as client:
        while True:
            lag, backlog = await pending_work(client, lag_urls, outbox_url)
            if lag == 0 and backlog == 0:
                out("drained: every accepted event is graded and every tier change is sent")
                return True
            if forced() or time.monotonic() > deadline:
                out(_gave_up(lag, backlog, memory_broker=memory_broker))
                return False
            if time.monotonic() - last_said >= 1.0:
                last_said = time.monotonic()
                out(f"draining: consumer lag {lag:,.0f}, outbox backlog {backlog:,.0f}")
            await asyncio.sleep(0.25)  # polling interval of a deadline-bounded wait


def _gave_up(lag: float, backlog: float, *, memory_broker: bool) -> str:
    lost = (" (the embedded broker is memory only: those events are lost)"
            if memory_broker and lag else "")
    return (f"stopping without draining: {lag:,.0f} events not yet graded{lost}, "
            f"{backlog:,.0f} tier changes left in the outbox (sent at the next start)")
