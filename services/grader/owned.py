"""The customers of the partitions this consumer owns, held in memory within a budget.

Loaded on first touch, kept in least-recently-used order, evicted (only when clean, i.e.
checkpointed) once the estimated size passes the budget, and dropped with their partition
when it is revoked. Customers a sweep re-grades without an event (a policy change, a
due date) are only passing through: held apart, in their stored form (decoded, graded and
encoded again in one go while in the CPU's caches, see `checkpoints.grade_pending`), until
written, then dropped first, so that re-grading a million customers does not push out the
ones events keep coming for. An event for one of them decodes it into an ordinary customer.

The estimate is deliberately simple: a base cost plus what grows with the customer (day
buckets, categories, ladders), calibrated against tracemalloc on CPython 3.11
(tests/bench/bench_grader.py --memory prints the real RSS next to it).
"""

from __future__ import annotations

import gc
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from services.grader.grading.customer import CustomerState
from services.grader.repository import Stored, decode_state

BASE_BYTES = 1_500
DAY_BYTES = 200
CATEGORY_BYTES = 100
LADDER_BYTES = 350


def estimate(state: CustomerState) -> int:
    """Roughly how many bytes of Python objects a customer's state takes."""
    agg = state.aggregates
    return (BASE_BYTES + DAY_BYTES * len(agg.days) + CATEGORY_BYTES * len(agg.categories)
            + LADDER_BYTES * len(state.ladders))


class OwnedCustomers:
    """Customer states by id, with the partition that owns each."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.bytes = 0
        self._states: OrderedDict[str, tuple[int, CustomerState, int]] = OrderedDict()
        # Passing through (`pass_through`): outside the budget and the eviction order; a
        # sweep holds two chunks of them at most (the one in flight and the next).
        self._passing: dict[str, tuple[int, Stored]] = {}

    def __len__(self) -> int:
        return len(self._states) + len(self._passing)

    def __contains__(self, customer_id: object) -> bool:
        return customer_id in self._states or customer_id in self._passing

    def get(self, customer_id: str) -> CustomerState | None:
        """A held customer, marked as just used (one passing through is decoded and stays:
        it is used); raises `repository.StateCorrupt`."""
        found = self._states.get(customer_id)
        if found is not None:
            self._states.move_to_end(customer_id)
            return found[1]
        passing = self._passing.pop(customer_id, None)
        if passing is None:
            return None
        partition, stored = passing
        state = decode_state(customer_id, *stored)
        self.put(partition, state)
        return state

    def peek(self, customer_id: str) -> CustomerState | None:
        """A customer held as an object (not one passing through), leaving its place in
        the eviction order."""
        found = self._states.get(customer_id)
        return None if found is None else found[1]

    def passing(self, customer_id: str) -> tuple[int, Stored] | None:
        """A customer passing through: (partition, stored form)."""
        return self._passing.get(customer_id)

    def partition(self, customer_id: str) -> int:
        """The partition that owns a held customer."""
        found = self._states.get(customer_id)
        return found[0] if found is not None else self._passing[customer_id][0]

    def pass_through(self, partition: int, customer_id: str, stored: Stored) -> None:
        """Hold a customer read only to be re-graded (not held yet), or its re-graded
        stored form: dropped at the first eviction after it is written, unless `get` is
        asked for it before."""
        self._passing[customer_id] = (partition, stored)

    def put(self, partition: int, state: CustomerState) -> None:
        """Hold a customer (new, or loaded from the database)."""
        self.discard(state.customer_id)
        size = estimate(state)
        self._states[state.customer_id] = (partition, state, size)
        self.bytes += size

    def discard(self, customer_id: str) -> None:
        """Forget one customer."""
        old = self._states.pop(customer_id, None)
        if old is not None:
            self.bytes -= old[2]
        self._passing.pop(customer_id, None)

    def resized(self, customer_ids: Iterable[str]) -> None:
        """Re-estimate customers whose state grew or shrank (after a checkpoint)."""
        for customer_id in customer_ids:
            found = self._states.get(customer_id)
            if found is not None:
                partition, state, size = found
                new = estimate(state)
                self._states[customer_id] = (partition, state, new)
                self.bytes += new - size

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget every customer of these partitions; how many were dropped."""
        gone = set(partitions)
        ids = [cid for cid, (p, _, _) in self._states.items() if p in gone]
        ids += [cid for cid, (p, _) in self._passing.items() if p in gone]
        for customer_id in ids:
            self.discard(customer_id)
        return len(ids)

    def clear(self) -> None:
        """Forget everything (the database is the truth again)."""
        self._states.clear()
        self._passing.clear()
        self.bytes = 0

    def evict(self, keep: Iterable[str] = ()) -> int:
        """Drop the customers passing through, then least recently used ones until within
        the budget, never those in `keep` (not written yet); how many went."""
        pinned = set(keep)
        evicted = 0
        if self._passing:
            kept = {cid: entry for cid, entry in self._passing.items() if cid in pinned}
            evicted = len(self._passing) - len(kept)
            self._passing = kept
        if self.bytes <= self.budget_bytes:
            return evicted
        skipped = 0
        states = self._states
        while self.bytes > self.budget_bytes and skipped < len(states):
            customer_id, entry = states.popitem(last=False)
            if customer_id in pinned:
                states[customer_id] = entry  # back, as the most recent: used anyway
                skipped += 1
                continue
            self.bytes -= entry[2]
            evicted += 1
        return evicted


class Freezer:
    """Keeps loaded customer states out of the cyclic garbage collector's sight.

    States live long and hold no reference cycles (refcounting frees them when evicted),
    yet each one was walked by a few collections on its way to the oldest generation:
    ~10 us a customer on a policy change. `loaded()` after states come in moves every
    object tracked so far out of the collector's sight (`gc.freeze`: constant time).
    Every `thaw_s` they are handed back and collected once (a full collection, about
    0.1 s per million objects), so that cyclic garbage which happened to be alive at a
    freeze (asyncio's, an exception's) is still freed: a leak lasts `thaw_s` at most."""

    def __init__(self, thaw_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.thaw_s = thaw_s
        self.clock = clock
        self.thawed = clock()

    def loaded(self) -> None:
        """States were loaded: freeze (and first thaw, when it is time)."""
        now = self.clock()
        if now - self.thawed >= self.thaw_s:
            self.thawed = now
            gc.unfreeze()
            gc.collect()
        gc.freeze()
