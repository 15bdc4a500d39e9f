"""The notifier's composition root: the relay as a supervised background task, health routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.notifier.health import broker_ready, database_ready
from services.notifier.metrics import NotifierMetrics
from services.notifier.relay import Relay
from services.notifier.sender import KafkaSender
from shared.db import engine as db
from shared.db.engine import make_engine
from shared.http import health_router, install_problem_handlers
from shared.kafka import make_producer
from shared.settings import NotifierSettings
from shared.tasks import supervise

log = logging.getLogger(__name__)



def build_relay(settings: NotifierSettings, metrics: NotifierMetrics) -> Relay:
    """The relay wired to the settings' database and broker."""
    url = settings.database_url.get_secret_value()

    def sender() -> KafkaSender:
        return KafkaSender(
            topic=settings.topic_tier_changes, timeout_s=settings.produce_timeout_s,
            producer_factory=lambda: make_producer(settings, client_id="tierflow-notifier"),
        )

    return Relay(
        connect=lambda: db.connect(url), sender_factory=sender, metrics=metrics,
        batch=settings.relay_batch, idle_s=settings.relay_idle_ms / 1000,
    )


def create_app(settings: NotifierSettings) -> FastAPI:
    """The notifier app; its lifespan starts and stops the relay."""
    registry = CollectorRegistry()
    metrics = NotifierMetrics.create(registry)
    relay = build_relay(settings, metrics)
    engine = make_engine(settings.database_url.get_secret_value(), pool_size=1)
    tasks: list[asyncio.Task[None]] = []

    async def ready() -> dict[str, bool]:
        return {
            "database": await database_ready(engine),
            "broker": await broker_ready(settings.kafka_bootstrap),
            "relay": bool(tasks) and not tasks[0].done(),
        }

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        relaying = supervise(relay.run, name="relay", delay=1.0)
        tasks.append(asyncio.create_task(relaying, name="relay"))
        try:
            yield
        finally:
            task = tasks.pop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await engine.dispose()

    app = FastAPI(title="tierflow notifier", lifespan=lifespan)
    install_problem_handlers(app)
    app.include_router(health_router(registry, ready))
    app.state.metrics = metrics
    return app
