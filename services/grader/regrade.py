"""Re-grading without new events: after a policy change, and as days pass (windows slide,
days-since grow), so a customer can become churned without anyone buying anything."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.grader import jobs
from services.grader.handler import regrade_due
from services.grader.metrics import GraderMetrics
from services.grader.policies import PolicyCache
from shared.db.engine import raw

log = logging.getLogger(__name__)


class Regrader:
    """Sweeps customers graded under an older policy or on an earlier UTC day."""

    def __init__(
        self, *, engine: AsyncEngine, policies: PolicyCache, metrics: GraderMetrics,
        chunk: int, interval_s: float,
    ) -> None:
        self.engine = engine
        self.policies = policies
        self.metrics = metrics
        self.chunk = chunk
        self.interval_s = interval_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Start a sweep now (a new policy was stored)."""
        self._wake.set()

    async def run(self) -> None:
        """Sweep at start, on every wake-up, and at least every `interval_s`."""
        while True:
            await self.sweep()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
            self._wake.clear()

    async def sweep(self) -> int:
        """Re-grade every due customer, chunk by chunk, in one pass over the ids; returns
        how many were re-graded. Rows busy in a batch are skipped: that batch grades them
        (events), or the next sweep does."""
        total, after = 0, ""
        while True:
            async with self.engine.connect() as sa_conn:
                conn = await raw(sa_conn)
                active = await self.policies.refresh(conn)
                ids, outcome = await regrade_due(
                    conn, active=active, now=datetime.now(UTC), limit=self.chunk, after=after
                )
                if not ids:
                    await jobs.finish_completed(conn, version=active.version)
            total += len(ids)
            for reason, regraded in outcome.regraded.items():
                self.metrics.regraded.labels(reason).inc(regraded)
            self.metrics.count_changes(row.payload for row in outcome.changes)
            if not ids:
                return total
            after = ids[-1]
