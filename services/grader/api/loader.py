"""Single-customer lookups that arrive together are read with one query.

One query per `GET /v1/customers/{id}` cost a pool hand-off and a round trip each, in this
process and in PostgreSQL (on the same cores), and asyncpg's pool lets a request that asks
for a connection overtake those already waiting for one: at 32 concurrent lookups a few
waited hundreds of milliseconds. Here the ids asked for in one turn of the event loop go
out together as one `customer_id = ANY($1)` query, with at most `max_in_flight` queries
under way; ids asked for meanwhile wait, in arrival order, for the next one.
"""

from __future__ import annotations

import asyncio

import asyncpg

from services.grader import repository as repo

Waiters = dict[str, list["asyncio.Future[repo.StoredCustomer | None]"]]
MAX_BATCH = 1000


class CustomerLoader:
    """`await loader.load(customer_id)`: the stored customer, or None if never seen."""

    def __init__(self, pool: asyncpg.Pool, *, max_in_flight: int = 2,
                 max_batch: int = MAX_BATCH) -> None:
        self._pool = pool
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._waiting: Waiters = {}
        self._in_flight = 0
        self._flush_due = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def load(self, customer_id: str) -> repo.StoredCustomer | None:
        """The customer, read together with whatever else is asked for meanwhile."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[repo.StoredCustomer | None] = loop.create_future()
        self._waiting.setdefault(customer_id, []).append(future)
        if not self._flush_due and self._in_flight < self._max_in_flight:
            # Once the callbacks already due in this turn have run: requests that arrived
            # together share the query.
            self._flush_due = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_due = False
        while self._waiting and self._in_flight < self._max_in_flight:
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._read(self._take()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> Waiters:
        """The ids waiting longest, up to `max_batch` (a dict keeps arrival order)."""
        if len(self._waiting) <= self._max_batch:
            batch, self._waiting = self._waiting, {}
            return batch
        return {i: self._waiting.pop(i) for i in list(self._waiting)[: self._max_batch]}

    async def _read(self, batch: Waiters) -> None:
        try:
            async with self._pool.acquire() as conn:
                rows = await repo.customer_rows(conn, list(batch))
        except asyncio.CancelledError:
            _settle(batch, cancel=True)
            raise
        except Exception as exc:  # noqa: BLE001 - every waiter gets it, as its own query would
            _settle(batch, error=exc)
        else:
            for row in rows:
                futures = batch.pop(row[0])
                try:
                    stored = repo.stored_customer(row)
                except Exception as exc:  # noqa: BLE001 - only this customer's lookups fail
                    _settle({row[0]: futures}, error=exc)
                else:
                    _settle({row[0]: futures}, result=stored)
            _settle(batch, result=None)  # never seen
        finally:
            self._in_flight -= 1
            if self._waiting and not self._flush_due:
                self._flush()

    async def close(self) -> None:
        """Wait for the queries under way (their waiters are answered)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _settle(batch: Waiters, *, result: repo.StoredCustomer | None = None,
            error: Exception | None = None, cancel: bool = False) -> None:
    for futures in batch.values():
        for future in futures:
            if future.done():  # its request was cancelled
                continue
            if cancel:
                future.cancel()
            elif error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
