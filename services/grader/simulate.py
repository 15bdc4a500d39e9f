"""`POST /v1/policy/simulate`: every stored customer graded under a candidate policy,
changing nothing.

The work runs in worker processes, one per usable core by default
(`TIERFLOW_SIMULATE_WORKERS`), each reading the customers of its share of the partitions
with a server-side cursor: the API process's event loop only waits for their counts, so
lookups go on meanwhile.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from typing import Any

from services.grader import repository as repo
from services.grader.grading.policy import ActivePolicy
from services.grader.grading.whatif import Transitions
from shared.db.engine import connect

FETCH = 2000


async def simulate(database_url: str, document: dict[str, Any], *, version: int,
                   base_currency: str, partitions: int, workers: int,
                   now: datetime) -> Transitions:
    """Grade everyone under `document` as version `version` would, as of `now`."""
    count = max(1, min(workers, partitions))
    shares = [list(range(i, partitions, count)) for i in range(count)]
    loop = asyncio.get_running_loop()
    # spawn: a fork of a process running an event loop and open connections is unsafe.
    pool = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"))
    try:
        results = await asyncio.gather(*(
            loop.run_in_executor(pool, _run_share, database_url, document, version,
                                 base_currency, share, now)
            for share in shares))
    finally:
        # On a failure (or a cancelled request) the other shares are not waited for: the
        # event loop must not block on them, and their processes go with the pool.
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
    total = Transitions()
    for result in results:
        total.merge(result)
    return total


def _run_share(database_url: str, document: dict[str, Any], version: int, base_currency: str,
               partitions: Sequence[int], now: datetime) -> Transitions:
    """In a worker process."""
    return asyncio.run(_share(database_url, document, version, base_currency, partitions, now))


async def _share(database_url: str, document: dict[str, Any], version: int,
                 base_currency: str, partitions: Sequence[int], now: datetime) -> Transitions:
    active = ActivePolicy.from_document(version, document, base_currency=base_currency)
    transitions = Transitions()
    conn = await connect(database_url)
    try:
        async with conn.transaction(readonly=True):
            async for row in conn.cursor(repo.ALL_OF_PARTITIONS, list(partitions),
                                         prefetch=FETCH):
                transitions.add(repo.stored_customer(row).state, active, now=now)
    finally:
        await conn.close()
    return transitions
