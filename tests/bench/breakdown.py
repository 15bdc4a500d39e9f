"""Where the grader's time goes: timers wrapped around its steps for one phase of a bench.

The wrappers replace module attributes (the grader's own code is unchanged); nested steps
are included in their callers' times, as the labels say.
"""

from __future__ import annotations

import inspect
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from services.grader import checkpoints, repository
from services.grader import consumer as consumer_module
from services.grader.consumer import Consumer
from services.grader.side_effects import SideEffects

STEPS: list[tuple[object, str, str]] = [
    (Consumer, "_take", "take a poll (all of: validate, dedupe, load, fold)"),
    (consumer_module, "validate", "  validate (parse + rules)"),
    (repository, "seen_events", "  dedupe lookup (SQL)"),
    (repository, "load_customers", "  load customers (SQL + decode)"),
    (consumer_module, "apply", "  fold"),
    (Consumer, "_checkpoint", "checkpoint (all of: flush, grade, encode, wait)"),
    (SideEffects, "flush", "  DLQ / re-route acks"),
    (checkpoints, "grade_customer", "  grade (slide, metrics, ladders)"),
    (repository, "encode_state", "  encode state"),
    (repository, "message", "  message JSON"),
    (checkpoints.Writer, "wait", "  wait for the previous write"),
    (repository, "write_checkpoint", "write (SQL; overlaps the next poll)"),
]


def _wrap(fn: Callable[..., Any], label: str, seconds: dict[str, float],
          calls: dict[str, int]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                seconds[label] += time.perf_counter() - started
                calls[label] += 1
        return timed_async

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[label] += time.perf_counter() - started
            calls[label] += 1
    return timed


@contextmanager
def timing(enabled: bool, phase: str, events: int) -> Iterator[None]:
    """Time the steps while the block runs and print microseconds per event after it."""
    if not enabled:
        yield
        return
    seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in STEPS]
    for (owner, name, label), (_, _, fn) in zip(STEPS, originals, strict=True):
        setattr(owner, name, _wrap(fn, label, seconds, calls))
    try:
        yield
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)
        print(f"  breakdown, {phase} ({events:,} events):")
        for _, _, label in STEPS:
            if calls[label]:
                print(f"    {label:<48} {seconds[label] / events * 1e6:7.1f} us/event "
                      f"{calls[label]:>9,} calls")
