"""The grader's composition root. One process can serve the API (lookups, stats, policy),
run one consume loop, or both: `tierflow up` runs the API and the consumers apart, so
lookups never wait behind grading and grading never waits behind lookups."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI

from services.grader import dashboard
from services.grader.api import customers, explain, history, policy, stats, writes
from services.grader.api.deps import Grader
from services.grader.api.loader import CustomerLoader
from services.grader.consumer import Clock, Consumer, utc_now
from services.grader.policies import PolicyCache
from services.grader.telemetry import GraderMetrics
from shared.db.engine import KEYED_LOOKUPS, Timeouts, create_pool
from shared.http import (
    ApiKeys,
    Check,
    KeyGate,
    document_api,
    health_router,
    install_problem_handlers,
)
from shared.kafka import ensure_topics, make_producer
from shared.policy_yaml import MAX_POLICY_BYTES
from shared.settings import GraderSettings
from shared.tasks import supervise

log = logging.getLogger(__name__)
STALE_POLL_S = 60.0
POLICY_REFRESH_S = 1.0
GAUGE_REFRESH_S = 60.0
# The readiness query's own bound (within /readyz's overall one, shared/http.py).
READY_TIMEOUT_S = 2.0
# The largest body a route takes: a policy document (a lookup of 1,000 ids is ~135 KB).
MAX_BODY_BYTES = MAX_POLICY_BYTES
# Batched single lookups under way at once; the rest of the pool serves the other routes.
LOOKUPS_IN_FLIGHT = 2


async def refresh_policy(grader: Grader, pool: asyncpg.Pool) -> None:
    """Follow policies stored by other processes (lookups label tiers by the policy)."""
    while True:
        async with pool.acquire() as conn:
            await grader.policies.refresh(conn)
        await asyncio.sleep(POLICY_REFRESH_S)


async def refresh_customer_gauge(grader: Grader, pool: asyncpg.Pool) -> None:
    """Keep `tierflow_customers` current without a query per scrape."""
    while True:
        async with pool.acquire() as conn:
            dist = await stats.distribution(conn, grader.policies.active)
        for ladder, tiers in dist["ladders"].items():
            for tier, count in tiers.items():
                grader.metrics.customers.labels(ladder, tier).set(count)
        await asyncio.sleep(GAUGE_REFRESH_S)


async def keep_session(conn: asyncpg.Connection) -> None:
    """No reset when a connection goes back to the pool: the API leaves no session state
    behind (no LISTEN, locks or SET outside a transaction), and asyncpg's default reset
    is a second round trip on every lookup."""


@asynccontextmanager
async def running(grader: Grader, consumer: Consumer | None) -> AsyncIterator[None]:
    """Open the pool, load the policy, start the background loops; stop them all on the
    way out."""
    settings = grader.settings
    size = settings.db_pool_size if grader.serves_api else 1
    pool = grader.pool = await create_pool(
        settings.database_url.get_secret_value(), Timeouts.of(settings), min_size=size,
        max_size=size, settings=KEYED_LOOKUPS, reset=keep_session)
    async with pool.acquire() as conn:
        await grader.policies.load(conn)
    tasks = []
    if grader.serves_api:
        grader.loader = CustomerLoader(pool, max_in_flight=min(size, LOOKUPS_IN_FLIGHT))
        grader.controls = writes.ControlSender(settings)
        tasks += [
            asyncio.create_task(supervise(lambda: refresh_policy(grader, pool), name="policy")),
            asyncio.create_task(supervise(lambda: refresh_customer_gauge(grader, pool),
                                          name="gauges")),
        ]
    # aiokafka clients bind to the running loop: create them here, not in create_app.
    producer = None
    if consumer is not None:
        producer = make_producer(grader.settings, client_id="tierflow-grader")
        await ensure_topics(grader.settings)
        await producer.start()
        tasks.append(asyncio.create_task(
            supervise(lambda: consumer.run(producer), name="consumer")))
    else:
        # What start-up made (imports, the app, the pool) lives as long as the process:
        # left to the collector, every full collection walked it all (~100,000 objects,
        # 40-65 ms, every second or two under load) with every lookup in flight stalled.
        # (The consume loop freezes its own.)
        gc.collect()
        gc.freeze()
    try:
        yield
    finally:
        if grader.dashboard.refreshing is not None:
            tasks.append(grader.dashboard.refreshing)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if producer is not None:
            await producer.stop()
        if grader.loader is not None:
            await grader.loader.close()
        if grader.controls is not None:
            await grader.controls.close()
        await pool.close()


def readiness(grader: Grader, consumer: Consumer | None) -> dict[str, Check]:
    """The database answers, and the consume loop (if any) is making progress."""

    async def database() -> bool:
        if grader.pool is None:
            return False
        try:
            # One bound for the wait for a connection and the query together.
            async with asyncio.timeout(READY_TIMEOUT_S), grader.pool.acquire() as conn:
                return bool(await conn.fetchval("SELECT 1") == 1)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("readiness: database unreachable: %s", exc)
            return False

    checks: dict[str, Check] = {"database": database}
    if consumer is not None:
        async def polling() -> bool:
            return consumer.healthy(STALE_POLL_S)

        checks["consumer"] = polling
    return checks


def create_app(settings: GraderSettings, *, clock: Clock = utc_now) -> FastAPI:
    """The grader app in the role its settings name (`TIERFLOW_GRADER_ROLE`); `clock` is
    what the consumer grades by (tests move it to let days pass)."""
    metrics = GraderMetrics()
    serves_api = settings.grader_role in ("all", "api")
    policies = PolicyCache(base_currency=settings.base_currency)
    grader = Grader(settings, policies, metrics, serves_api)
    consumer = (Consumer(settings, policies=policies, metrics=metrics, clock=clock)
                if settings.grader_role in ("all", "consumer") else None)
    app = FastAPI(title="tierflow grader", lifespan=lambda _: running(grader, consumer))
    app.state.grader = grader
    app.state.consumer = consumer
    install_problem_handlers(app)
    app.include_router(health_router(metrics.registry, readiness(grader, consumer)))
    if serves_api:
        keys = ApiKeys(settings.key_scopes())
        # The key and the body's size are checked before routing (policy, jobs and every
        # PUT or DELETE: admin);
        # FastLookups, outermost, answers the keys that may read tiers before either.
        app.add_middleware(KeyGate, keys=keys, max_body=MAX_BODY_BYTES, scopes={
            "/v1/customers": customers.READ_SCOPE, "/v1/stats": customers.READ_SCOPE,
            "/v1/ladders": customers.READ_SCOPE, "/v1/dashboard": customers.READ_SCOPE})
        app.add_middleware(customers.FastLookups, grader=grader, keys=keys)
        app.include_router(customers.router)
        app.include_router(explain.router)
        app.include_router(history.router)
        app.include_router(stats.router)
        app.include_router(policy.router)
        app.include_router(writes.router)
        app.include_router(dashboard.router)
        app.include_router(dashboard.page)
    document_api(app)
    return app
