"""Composition root of the ingest process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry
from starlette.responses import Response

from services.ingest.intake import IngestProblem
from services.ingest.metrics import IngestMetrics
from services.ingest.openapi import event_schemas
from services.ingest.publisher import EventPublisher, KafkaPublisher
from services.ingest.routes import EventRoutes, events_router
from shared.http import (
    ApiKeys,
    KeyGate,
    document_api,
    health_router,
    install_problem_handlers,
    problem,
)
from shared.settings import IngestSettings


def create_app(settings: IngestSettings, *, publisher: EventPublisher | None = None) -> FastAPI:
    """The ingest app; the publisher starts and stops with the app's lifespan."""
    events_out: EventPublisher = publisher or KafkaPublisher(settings)
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await events_out.start()
        try:
            yield
        finally:
            await events_out.stop()

    async def on_problem(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, IngestProblem)  # noqa: S101
        if exc.reason is not None:
            metrics.count_rejections([(exc.event_type, exc.reason)])
        return problem(
            exc.status, exc.title, detail=exc.detail, errors=exc.errors, headers=exc.headers
        )

    # Metrics are Prometheus; FastAPI's own OpenTelemetry hooks would look up providers on
    # every request of this hot path, so they are off (older FastAPI ignores the argument).
    app = FastAPI(
        title="tierflow ingest", version="1", lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_problem_handlers(app)
    app.add_exception_handler(IngestProblem, on_problem)
    routes = EventRoutes(settings, publisher=events_out, metrics=metrics)
    # Event routes first: the router tries routes in order and these are the busy ones.
    app.include_router(events_router(routes))
    app.include_router(health_router(registry, {"broker": events_out.ready}))
    # The key before anything reads the body; the routes limit their bodies themselves,
    # after the media type, counting what they refuse.
    app.add_middleware(KeyGate, keys=ApiKeys(settings.key_scopes()),
                       scopes={"/v1/events": "events:write"}, max_body=None)
    document_api(app, schemas=event_schemas(settings.base_currency, settings.max_batch_events))
    app.state.registry = registry
    return app
