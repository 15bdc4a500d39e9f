"""The notifier's composition root: the outbox relay, webhook delivery, the subscriptions
API and health routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.notifier.api import subscriptions
from services.notifier.api.subscriptions import Webhooks
from services.notifier.health import PROBE_TIMEOUT_S, broker_ready, database_ready
from services.notifier.metrics import NotifierMetrics
from services.notifier.relay import Relay
from services.notifier.sender import KafkaSender
from services.notifier.webhooks import store
from services.notifier.webhooks.addresses import UrlGuard, parse_networks
from services.notifier.webhooks.dispatcher import Clock, Dispatcher, jitter, utc_now
from services.notifier.webhooks.vault import Vault
from shared.db import engine as db
from shared.db.engine import KEYED_LOOKUPS, Timeouts, create_pool, make_engine
from shared.http import (
    ApiKeys,
    Check,
    KeyGate,
    document_api,
    health_router,
    install_problem_handlers,
)
from shared.kafka import make_producer
from shared.settings import NotifierSettings
from shared.tasks import supervise

log = logging.getLogger(__name__)

POOL_SIZE = 4
# A subscription with the longest URL and full filters is ~45 KB.
MAX_BODY_BYTES = 64 * 1024


def build_relay(
    settings: NotifierSettings, metrics: NotifierMetrics, *, clock: Clock = utc_now,
    on_deliveries: Callable[[], None] = lambda: None,
) -> Relay:
    """The relay wired to the settings' database and broker."""
    url = settings.database_url.get_secret_value()
    # Each command within half the lease: a leader whose connection died learns it (and
    # stops) before PostgreSQL can give its lock to another notifier.
    lease = settings.relay_lease_s
    timeouts = Timeouts.of(settings, query_s=min(settings.db_query_timeout_s, lease / 2))

    def sender() -> KafkaSender:
        return KafkaSender(
            topic=settings.topic_tier_changes, timeout_s=settings.produce_timeout_s,
            producer_factory=lambda: make_producer(settings, client_id="tierflow-notifier"),
        )

    return Relay(
        # Keyed lookups: the fan-out's per-lane probe must stay an index probe even when the
        # statistics say the queue is empty (the normal state of a healthy one).
        connect=lambda: db.connect(url, settings=KEYED_LOOKUPS, timeouts=timeouts.lease(lease)),
        sender_factory=sender, metrics=metrics,
        batch=settings.relay_batch, idle_s=settings.relay_idle_ms / 1000, clock=clock,
        on_deliveries=on_deliveries, lease_s=lease,
    )


async def listen(url: str, timeouts: Timeouts, dispatcher: Dispatcher) -> None:
    """Wake the dispatcher when another process queues deliveries or edits subscriptions
    (an optimisation: the dispatcher also polls)."""
    conn = await db.connect(url, timeouts=timeouts)
    try:
        await conn.add_listener(store.NOTIFY_DELIVERIES, lambda *_: dispatcher.wake())
        await conn.add_listener(store.NOTIFY_SUBSCRIPTIONS, lambda *_: dispatcher.reload())
        while not conn.is_closed():
            await asyncio.sleep(1.0)
            await conn.execute("SELECT 1")  # notice a dead connection (command timeout)
    finally:
        conn.terminate()


async def keep_session(conn: asyncpg.Connection) -> None:
    """No reset when a connection goes back to the pool: nothing leaves session state behind
    (the LISTEN is on a connection of its own), and the default reset is a round trip."""


def create_app(
    settings: NotifierSettings, *, clock: Clock = utc_now,
    resolver: Callable[[], AbstractResolver] = ThreadedResolver,
    spread: Callable[[], float] = jitter,
) -> FastAPI:
    """The notifier app; its lifespan starts and stops the relay and the dispatcher.
    `clock`, `resolver` and `spread` are the seams tests use (time, DNS, retry jitter)."""
    registry = CollectorRegistry()
    metrics = NotifierMetrics.create(registry)
    url = settings.database_url.get_secret_value()
    key = settings.webhook_secrets_key
    webhooks = Webhooks(vault=None if key is None else Vault(key.get_secret_value()),
                        clock=clock)
    timeouts = Timeouts.of(settings)
    # The readiness probe's own engine: its connect and query answer within the probe.
    engine = make_engine(url, pool_size=1, timeouts=Timeouts(
        connect_s=PROBE_TIMEOUT_S, query_s=PROBE_TIMEOUT_S, dead_peer_s=settings.db_dead_peer_s))
    tasks: dict[str, asyncio.Task[None]] = {}

    async def relay_running() -> bool:
        return "relay" in tasks and not tasks["relay"].done()

    ready: dict[str, Check] = {
        "database": lambda: database_ready(engine),
        "broker": lambda: broker_ready(settings.kafka_bootstrap),
        "relay": relay_running,
    }

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if webhooks.vault is None:
            log.warning("TIERFLOW_WEBHOOK_SECRETS_KEY is not set: tier changes go to the"
                        " topic, but webhook subscriptions cannot be created")
        webhooks.guard = UrlGuard(resolver(), parse_networks(settings.webhook_allowed_networks))
        # Keyed lookups: with statistics taken while the queue was empty (its normal state),
        # the planner answered the claim's lane check by rescanning every pending delivery
        # for each candidate (80 ms a claim at 20,000 pending, against 0.8 ms by the index).
        webhooks.pool = await create_pool(
            url, timeouts, min_size=1, max_size=POOL_SIZE, settings=KEYED_LOOKUPS,
            reset=keep_session,
        )
        dispatcher = Dispatcher(
            pool=webhooks.pool, vault=webhooks.vault, guard=webhooks.guard, metrics=metrics,
            clock=clock, spread=spread, timeout_s=settings.webhook_timeout_s,
            concurrency=settings.webhook_concurrency, poll_s=settings.webhook_poll_ms / 1000,
        )
        relay = build_relay(settings, metrics, clock=clock, on_deliveries=dispatcher.wake)
        loops = {"relay": relay.run, "webhooks": dispatcher.run,
                 "listener": lambda: listen(url, timeouts, dispatcher)}
        for name, run in loops.items():
            tasks[name] = asyncio.create_task(supervise(run, name=name, delay=1.0), name=name)
        try:
            yield
        finally:
            for task in tasks.values():
                task.cancel()
            for task in tasks.values():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            tasks.clear()
            await webhooks.pool.close()
            await webhooks.guard.resolver.close()
            await engine.dispose()

    app = FastAPI(title="tierflow notifier", lifespan=lifespan)
    install_problem_handlers(app)
    app.include_router(health_router(registry, ready))
    # Every /v1 route needs admin; the key and the body's size are checked before routing.
    app.add_middleware(KeyGate, keys=ApiKeys(settings.key_scopes()), scopes={},
                       max_body=MAX_BODY_BYTES)
    app.include_router(subscriptions.router)
    document_api(app)
    app.state.metrics = metrics
    app.state.webhooks = webhooks
    return app
