"""Single lookups asked for together are read with one query, a few queries at a time, and
each lookup gets its own customer, None, or the error of its query or its row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Any

import msgspec
import pytest

from services.grader import repository as repo
from services.grader.api.loader import CustomerLoader
from services.grader.grading.customer import CustomerState

UPDATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class FakeConn:
    """Answers the lookup query from `rows`; `gate` holds every query until it is set."""

    def __init__(self, rows: dict[str, tuple[Any, ...]], gate: asyncio.Event) -> None:
        self.rows = rows
        self.gate = gate
        self.queries: list[list[str]] = []
        self.error: Exception | None = None
        self.running = 0
        self.most_running = 0

    async def fetch(self, query: str, ids: list[str]) -> list[tuple[Any, ...]]:
        assert query == repo.LOAD
        self.queries.append(ids)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        if self.error is not None:
            raise self.error
        return [self.rows[i] for i in ids if i in self.rows]


class FakePool:
    def __init__(self, conn: FakeConn) -> None:
        self.conn = conn

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConn]:
        yield self.conn


def row(customer_id: str, blob: bytes | None = None) -> tuple[Any, ...]:
    blob = repo.encode_state(CustomerState(customer_id)) if blob is None else blob
    return (customer_id, blob, 3, date(2026, 1, 2), UPDATED, date(2026, 6, 30))


def loader_over(*ids: str, **kwargs: Any) -> tuple[CustomerLoader, FakeConn]:
    gate = asyncio.Event()
    gate.set()
    conn = FakeConn({i: row(i) for i in ids}, gate)
    return CustomerLoader(FakePool(conn), **kwargs), conn


async def test_lookups_asked_together_share_one_query() -> None:
    loader, conn = loader_over("a", "b", "c")
    found = await asyncio.gather(*(loader.load(i) for i in ["a", "b", "a", "nobody", "c"]))
    assert conn.queries == [["a", "b", "nobody", "c"]]
    assert [f.state.customer_id if f else None for f in found] == ["a", "b", "a", None, "c"]
    first = found[0]
    assert first is not None and first.updated_at == UPDATED
    assert first.state.policy_version == 3 and first.state.graded_on == date(2026, 1, 2).toordinal()
    assert first.state.due_on == date(2026, 6, 30).toordinal()


async def test_at_most_max_in_flight_queries_and_the_rest_wait_in_order() -> None:
    loader, conn = loader_over(*(f"c-{i}" for i in range(10)), max_in_flight=2, max_batch=3)
    conn.gate.clear()
    lookups = []
    for i in range(10):  # one per turn of the loop: each could have had its own query
        lookups.append(asyncio.ensure_future(loader.load(f"c-{i}")))
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert conn.running == 2
    conn.gate.set()
    found = await asyncio.gather(*lookups)
    assert [f.state.customer_id for f in found if f] == [f"c-{i}" for i in range(10)]
    assert conn.most_running == 2
    assert [i for q in conn.queries for i in q] == [f"c-{i}" for i in range(10)]
    assert all(len(q) <= 3 for q in conn.queries)


async def test_a_failed_query_fails_its_lookups_and_the_next_ones_are_read() -> None:
    loader, conn = loader_over("a", "b")
    conn.error = OSError("connection lost")
    results = await asyncio.gather(loader.load("a"), loader.load("b"), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    conn.error = None
    assert (await loader.load("a")) is not None


async def test_a_corrupt_state_fails_only_that_customer() -> None:
    loader, conn = loader_over("a")
    conn.rows["bad"] = row("bad", blob=msgspec.msgpack.encode([repo.FORMAT + 1]))
    bad, good = await asyncio.gather(loader.load("bad"), loader.load("a"),
                                     return_exceptions=True)
    assert isinstance(bad, repo.StateCorrupt) and not isinstance(good, BaseException)
    assert good is not None and good.state.customer_id == "a"


async def test_a_cancelled_lookup_leaves_the_others_answered() -> None:
    loader, conn = loader_over("a")
    conn.gate.clear()
    gone = asyncio.ensure_future(loader.load("a"))
    kept = asyncio.ensure_future(loader.load("a"))
    await asyncio.sleep(0)
    gone.cancel()
    conn.gate.set()
    assert (await kept) is not None
    with pytest.raises(asyncio.CancelledError):
        await gone
    await loader.close()
