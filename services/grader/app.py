"""The grader's composition root: consume loop, re-grader and HTTP API on one process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from services.grader.api import customers, policy, stats
from services.grader.api.deps import Grader
from services.grader.metrics import GraderMetrics
from services.grader.policies import PolicyCache
from services.grader.regrade import Regrader
from services.grader.worker import GraderWorker
from shared.db.engine import make_engine, raw
from shared.http import ApiKeys, health_router, install_problem_handlers
from shared.kafka import ensure_topics, make_producer
from shared.settings import GraderSettings
from shared.tasks import supervise

log = logging.getLogger(__name__)
STALE_POLL_S = 60.0


async def refresh_customer_gauge(grader: Grader, interval_s: float = 60.0) -> None:
    """Keep `tierflow_customers` current without a query per scrape."""
    while True:
        async with grader.engine.connect() as sa_conn:
            dist = await stats.distribution(await raw(sa_conn), grader.policies.active)
        for ladder, tiers in dist["ladders"].items():
            for tier, count in tiers.items():
                grader.metrics.customers.labels(ladder, tier).set(count)
        await asyncio.sleep(interval_s)


@asynccontextmanager
async def running(grader: Grader, worker: GraderWorker | None) -> AsyncIterator[None]:
    """Load the policy, start the background loops; stop them all on the way out."""
    async with grader.engine.connect() as sa_conn:
        await grader.policies.load(await raw(sa_conn))
    tasks = [
        asyncio.create_task(supervise(grader.regrader.run, name="regrader")),
        asyncio.create_task(supervise(lambda: refresh_customer_gauge(grader), name="gauges")),
    ]
    # aiokafka clients bind to the running loop: create them here, not in create_app.
    producer = make_producer(grader.settings, client_id="tierflow-grader-dlq")
    if worker is not None:
        await ensure_topics(grader.settings)
        await producer.start()
        worker.producer = producer
        tasks.append(asyncio.create_task(supervise(worker.run, name="consumer")))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if worker is not None:
            await producer.stop()
        await grader.engine.dispose()


Check = Callable[[], Awaitable[dict[str, bool]]]


def readiness(grader: Grader, worker: GraderWorker | None) -> Check:
    """The database answers, and the consume loop (if any) is making progress."""

    async def ready() -> dict[str, bool]:
        checks = {"database": False}
        try:
            async with grader.engine.connect() as sa_conn:
                checks["database"] = await (await raw(sa_conn)).fetchval("SELECT 1") == 1
        except (OSError, TimeoutError, SQLAlchemyError, asyncpg.PostgresError) as exc:
            log.warning("readiness: database unreachable: %s", exc)
        if worker is not None:
            checks["consumer"] = worker.healthy(STALE_POLL_S)
        return checks

    return ready


def create_app(settings: GraderSettings, *, consume: bool = True) -> FastAPI:
    """The grader app; `consume=False` serves the API without the consume loop."""
    metrics = GraderMetrics()
    engine = make_engine(settings.database_url.get_secret_value(), pool_size=settings.db_pool_size)
    policies = PolicyCache()
    regrader = Regrader(engine=engine, policies=policies, metrics=metrics,
                        chunk=settings.regrade_chunk, interval_s=settings.regrade_interval_s)
    grader = Grader(settings, engine, policies, metrics, regrader)
    worker = (GraderWorker(settings, engine=engine, policies=policies, metrics=metrics)
              if consume else None)
    app = FastAPI(title="tierflow grader", lifespan=lambda _: running(grader, worker))
    app.state.grader = grader
    install_problem_handlers(app)
    keys = ApiKeys(settings.key_scopes())
    app.include_router(health_router(metrics.registry, readiness(grader, worker)))
    read = [keys.dependency("tiers:read")]
    app.include_router(customers.router, dependencies=read)
    app.include_router(stats.router, dependencies=read)
    app.include_router(policy.router, dependencies=[keys.dependency("admin")])
    return app
