"""Event validation cost: `parse_event` (fast path) versus the pydantic path, µs per event.

Run: `.venv/bin/python tests/bench/bench_validation.py [--events N] [--runs R]`.
A realistic mix (purchases, interactions, feedback; mostly "…+08:00" instants, amounts as
strings and a few as numbers), every event valid. Prints the median of R runs; not a test.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import TypeVar

import orjson

from shared.events import (
    EVENT_ADAPTER,
    fast_parse_event,
    parse_event,
    parse_event_obj,
    slow_parse_event,
    slow_parse_event_obj,
)

CHINA = timezone(timedelta(hours=8))
CATEGORIES = ("shoes", "apparel", "electronics", "grocery", "beauty", "home", "toys", "books")
CHANNELS = ("app", "web", "store", "call-center")
ACTIONS = ("login", "view", "review", "share", "referral")
T = TypeVar("T")


def one_event(rng: random.Random, n: int, now: datetime) -> dict[str, object]:
    """One valid event: 40% purchases, 45% interactions, 15% feedback."""
    at = now - timedelta(seconds=rng.randrange(90 * 86400), microseconds=rng.randrange(10**6))
    doc: dict[str, object] = {
        "event_id": f"ev-{n}-{rng.randrange(10**9)}", "customer_id": f"c-{rng.randrange(50_000)}",
        "occurred_at": at.astimezone(CHINA).isoformat(timespec=rng.choice(
            ["seconds", "seconds", "milliseconds"])),
    }
    roll = rng.random()
    if roll < 0.4:
        cents = rng.randrange(100, 500_000)
        amount: object = f"{cents // 100}.{cents % 100:02d}" if rng.random() < 0.8 else cents / 100
        doc.update(type="purchase", source="pos", data={
            "amount": amount, "currency": "CNY", "order_id": f"o-{n}",
            "category": rng.choice(CATEGORIES), "quantity": rng.randrange(1, 5),
        })
    elif roll < 0.85:
        doc.update(type="interaction", source="app",
                   data={"channel": rng.choice(CHANNELS), "action": rng.choice(ACTIONS)})
    else:
        data: dict[str, object] = {"rating": rng.randrange(1, 6)}
        if rng.random() < 0.3:
            data["comment"] = "delivery was late, otherwise fine"
        doc.update(type="feedback", data=data)
    return doc


def per_event_us(fn: Callable[[T], object], items: Sequence[T], runs: int) -> float:
    """Median over `runs` of the mean µs per call of `fn` over all `items`."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for item in items:
            fn(item)
        samples.append((time.perf_counter() - start) / len(items) * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    rng = random.Random(7)
    now = datetime.now(UTC)
    docs = [one_event(rng, n, now) for n in range(args.events)]
    raws = [orjson.dumps(doc) for doc in docs]
    objs = [orjson.loads(raw) for raw in raws]
    taken = sum(fast_parse_event(raw) is not None for raw in raws)

    print(f"{args.events} events (valid; {taken} taken by the fast path), median of "
          f"{args.runs} runs, Python {platform.python_version()}")
    def show(label: str, us: float) -> None:
        print(f"  {label:<44} {us:6.2f} µs/event")

    show("parse_event (fast path)", per_event_us(parse_event, raws, args.runs))
    show("pydantic path: validate_json + to Struct",
         per_event_us(slow_parse_event, raws, args.runs))
    show("pydantic validate_json alone (as before)",
         per_event_us(EVENT_ADAPTER.validate_json, raws, args.runs))
    show("parse_event_obj (fast path)", per_event_us(parse_event_obj, objs, args.runs))
    show("pydantic path: validate_python + to Struct",
         per_event_us(slow_parse_event_obj, objs, args.runs))

if __name__ == "__main__":
    main()
