"""Background loops that must not die silently."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def supervise(
    run: Callable[[], Awaitable[None]], *, name: str, delay: float = 0.5, max_delay: float = 30.0
) -> None:
    """Run `run` until cancelled; a crash is logged and the loop restarted after a pause
    that doubles while it keeps crashing."""
    pause = delay
    while True:
        started = time.monotonic()
        try:
            await run()
        except Exception:
            # The task boundary: whatever escaped is logged with its traceback, then retried.
            log.exception("%s crashed; restarting in %.1f s", name, pause)
        if time.monotonic() - started > max_delay:
            pause = delay  # it ran a good while: this is a new failure, not the same one
        await asyncio.sleep(pause)
        pause = min(pause * 2, max_delay)
