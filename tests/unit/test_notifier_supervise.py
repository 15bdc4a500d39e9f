"""A crashed relay task is logged and restarted, never silently gone."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from shared.tasks import supervise
from tests.support import eventually


async def test_a_crash_is_logged_and_the_task_restarted(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0
    forever = asyncio.Event()

    async def crash_once() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ValueError("a bug")
        await forever.wait()

    task = asyncio.create_task(supervise(crash_once, name="relay"))
    with caplog.at_level(logging.ERROR, logger="shared.tasks"):

        async def restarted() -> None:
            assert runs == 2

        await eventually(restarted, timeout=5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert "relay crashed" in caplog.text
    assert "ValueError: a bug" in caplog.text
