"""Helpers shared by the test tiers: deadlines instead of sleeps, unique names."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def unique(prefix: str) -> str:
    """A name no other test uses: topics, groups, customer and event ids."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Call `check` until it returns without AssertionError, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)  # polling interval of a deadline-bounded wait
