"""`POST /v1/policy/simulate`: every stored customer graded under a candidate policy,
changing nothing.

The work runs in worker processes, one per core by default (`TIERFLOW_SIMULATE_WORKERS`),
each reading the customers of its share of the partitions with a server-side cursor: the
API process's event loop only waits for their counts, so lookups go on meanwhile.
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
    shares = [list(range(i, partitions, workers)) for i in range(min(workers, partitions))]
    if len(shares) == 1:
        return await _share(database_url, document, version, base_currency, shares[0], now)
    loop = asyncio.get_running_loop()
    # spawn: a fork of a process running an event loop and open connections is unsafe.
    with ProcessPoolExecutor(len(shares), mp_context=multiprocessing.get_context("spawn")) as pool:
        results = await asyncio.gather(*(
            loop.run_in_executor(pool, _run_share, database_url, document, version,
                                 base_currency, share, now)
            for share in shares))
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
