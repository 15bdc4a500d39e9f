"""Ctrl-C for long-running commands: the first asks for a clean stop, the second skips waiting."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from services.cli.config import Interrupted

T = TypeVar("T")


@dataclass
class StopSignal:
    """Set by SIGINT/SIGTERM; `forced` once a second one arrives."""

    requested: asyncio.Event = field(default_factory=asyncio.Event)
    forced: bool = False

    def request(self) -> None:
        """A stop was asked for (again: stop waiting for anything)."""
        if self.requested.is_set():
            self.forced = True
        self.requested.set()

    def is_set(self) -> bool:
        """True once a stop was asked for."""
        return self.requested.is_set()


def install_signals(stop: StopSignal, *, say: Callable[[str], None]) -> None:
    """Route SIGINT and SIGTERM to `stop` instead of raising KeyboardInterrupt mid-await."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            say("stopping now, without waiting for the queues to drain")
        else:
            say("stopping… (Ctrl-C again to stop without draining)")
        stop.request()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)


async def until_stopped(work: Coroutine[Any, Any, T], stop: StopSignal) -> T:
    """Run `work`, cancelling it and raising Interrupted if a stop is asked for first."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.requested.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise Interrupted


async def first_error(*work: Coroutine[Any, Any, object]) -> None:
    """Run all concurrently; the first failure cancels the rest and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for item in work:
                group.create_task(item)
    except ExceptionGroup as failures:
        raise failures.exceptions[0] from None
