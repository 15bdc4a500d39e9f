"""The grader killed with SIGKILL mid-batch and restarted: every customer's metrics equal
a recomputation from the accepted events (nothing lost, nothing applied twice)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.kafka import ensure_topics
from shared.settings import GraderSettings
from tests.faults.history import (
    applied_offsets,
    assert_state_equals_recomputation,
    grader_service,
    history,
)
from tests.integration.grader_support import produce
from tests.support import eventually, unique

pytestmark = pytest.mark.integration


async def test_sigkill_mid_batch_loses_and_doubles_nothing(
    migrated_pg: str, broker: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    prefix, topic = unique("crash"), unique("events")
    settings = GraderSettings(kafka_bootstrap=broker, topic_events=topic, events_partitions=3)
    await ensure_topics(settings)
    events = history(prefix, random.Random(7))
    await produce(broker, topic, events)
    grader = grader_service(migrated_pg, broker, topic, unique("grader"), tmp_path)
    kills = 0
    try:
        for threshold in (len(events) // 4, len(events) // 2):
            grader.start()

            async def past(mark: int = threshold) -> None:
                assert grader.proc is not None and grader.proc.poll() is None, grader.log_tail()
                assert await applied_offsets(engine, topic) >= mark

            await eventually(past, timeout=60, interval=0.01)
            grader.kill()  # mid-stream: batches are being graded continuously
            kills += 1
        assert await applied_offsets(engine, topic) < len(events), "killed too late to matter"
        grader.start()

        async def all_applied() -> None:
            assert await applied_offsets(engine, topic) == len(events), grader.log_tail()

        await eventually(all_applied, timeout=90, interval=0.1)
    finally:
        grader.stop()
    assert kills == 2
    await assert_state_equals_recomputation(engine, prefix, events)
