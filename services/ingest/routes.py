"""`POST /v1/events` and `POST /v1/events/batch`: parse, validate, publish, answer.

Order of checks for both: bearer key (401/403, by the app's KeyGate before routing), media
type (415), body size (413, before any parsing), JSON (400), rules (422 for one event; per
item in a batch).

Batch answers, beyond the contract's `{"accepted", "rejected", "results"}`:
- more than `max_batch_events` events: 413 problem (the client should split the batch);
- a body that is not `{"events": [...]}`: 422 problem; an empty list: 200 with nothing in it;
- JSON lines: blank lines are skipped, `index` counts the non-blank lines from 0, and a
  line that is not JSON is a rejected item (the rest of the batch still counts);
- a valid event the broker did not acknowledge in time has status `unavailable` and one
  error; the body then also carries `"unavailable": k`. Retry those with the same event_id.
- when the broker acknowledged none of the valid events: 503 with Retry-After, as for one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from services.ingest import openapi
from services.ingest.batch import (
    BatchShapeInvalid,
    TooManyEvents,
    check_item,
    claimed,
    settle,
    split_batch,
)
from services.ingest.intake import JSON, NDJSON, IngestProblem, media_type, read_body
from services.ingest.metrics import IngestMetrics
from services.ingest.publisher import EventPublisher
from services.ingest.validation import MalformedJson, Rejection, Rules, validate_json
from shared.http import ok, problems
from shared.settings import IngestSettings

RETRY_AFTER_S = "2"
_ONE = frozenset({JSON})
_MANY = NDJSON | _ONE


# A 503 is "not acknowledged in time", not "not stored": say what the client should do.
SAFE_RETRY = ("A send still pending at the deadline can land later, so the event may be "
              "stored: retry with the same event_id, which is always safe (an event_id is "
              "applied once).")


def unavailable(detail: str) -> IngestProblem:
    """503: not acknowledged in time; the client should retry with the same event_ids."""
    return IngestProblem(
        503, "Broker unavailable", detail=f"{detail}. {SAFE_RETRY}",
        headers={"Retry-After": RETRY_AFTER_S},
    )


def _json(body: Any, status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class EventRoutes:
    """The two event endpoints, sharing rules, publisher and metrics."""

    def __init__(
        self, settings: IngestSettings, *, publisher: EventPublisher, metrics: IngestMetrics
    ) -> None:
        self.settings, self.publisher, self.metrics = settings, publisher, metrics
        self.rules = Rules(settings.base_currency, settings.max_future_seconds)

    async def one(self, request: Request) -> Response:
        """Validate one event and publish it; 202 only once the broker acknowledged it."""
        media_type(request, _ONE)
        body = await read_body(request, limit=self.settings.max_body_bytes)
        latest = self.rules.latest(datetime.now(UTC))
        checked = validate_json(body, rules=self.rules, latest=latest)
        if isinstance(checked, Rejection):
            label = claimed(body)[1]
            self.metrics.count_event(label, "rejected")
            status, title = (400, "Malformed JSON") if checked.reason == "malformed" else (
                422, "Invalid event")
            raise IngestProblem(status, title, reason=checked.reason, errors=checked.errors,
                                event_type=label)
        (failure,) = await self.publisher.publish([checked])
        if failure is not None:
            self.metrics.count_event(checked.type, "unavailable")
            raise unavailable(str(failure))
        self.metrics.count_event(checked.type, "accepted")
        return _json({"event_id": checked.event_id, "status": "accepted"}, 202)

    async def many(self, request: Request) -> Response:
        """Validate a batch, publish its valid events together, answer per item."""
        ndjson = media_type(request, _MANY) in NDJSON
        body = await read_body(request, limit=self.settings.max_body_bytes)
        items = self._split(body, ndjson=ndjson)
        self.metrics.batch_size.observe(len(items))
        latest = self.rules.latest(datetime.now(UTC))
        checked = [check_item(item, rules=self.rules, latest=latest) for item in items]
        valid = [c for c in checked if not isinstance(c, Rejection)]
        settled = settle(items, checked, await self.publisher.publish(valid) if valid else [])
        self.metrics.count_events(settled.outcomes)
        self.metrics.count_rejections(settled.reasons)
        if valid and not settled.counts["accepted"]:
            raise unavailable(f"none of the {len(valid)} valid events was acknowledged")
        return _json(settled.answer(), 200)

    def _split(self, body: bytes, *, ndjson: bool) -> list[object]:
        """The batch's items, or the problem with the batch as a whole."""
        try:
            return split_batch(body, ndjson=ndjson, max_events=self.settings.max_batch_events)
        except MalformedJson as exc:
            status, title, reason = 400, "Malformed JSON", "malformed"
            detail = str(exc)
        except BatchShapeInvalid as exc:
            status, title, reason = 422, "Invalid batch", "validation"
            detail = str(exc)
        except TooManyEvents as exc:
            status, title, reason = 413, "Too many events", "too_many_events"
            detail = str(exc)
        raise IngestProblem(status, title, reason=reason, detail=detail)


def events_router(routes: EventRoutes) -> APIRouter:
    """The routes behind `events:write` (checked by the app's KeyGate), each timed into the
    latency histogram."""
    router = APIRouter(prefix="/v1", tags=["events"])
    latency = routes.metrics.latency
    limit = routes.settings.max_batch_events
    # Documented, not enforced by FastAPI: each route reads its body itself.
    errors = problems(
        (400, "The body is not JSON"), 415, (503, "The broker did not acknowledge in time: "
                                            "retry with the same event_ids"))

    async def timed(route: str, answer: Callable[[Request], Awaitable[Response]],
                    request: Request) -> Response:
        started, status = perf_counter(), 500
        try:
            response = await answer(request)
            status = response.status_code
            return response
        except IngestProblem as exc:
            status = exc.status
            raise
        except ClientDisconnect:
            status = 499  # the client went away: counted as 4xx, not as a failure of ours
            raise
        finally:
            latency[route].observe(perf_counter() - started)
            routes.metrics.count_response(route, status)

    @router.post("/events", status_code=202, response_model=None,
                 openapi_extra={"requestBody": openapi.one_body()}, responses={
                     202: ok(openapi.EventAccepted, "The broker acknowledged the event"),
                     **errors, **problems((422, "The event breaks a rule; `errors` names"
                                                " each field"))})
    async def post_event(request: Request) -> Response:
        """Publish one event (bearer key with `events:write`)."""
        return await timed("/v1/events", routes.one, request)

    @router.post("/events/batch", response_model=None,
                 openapi_extra={"requestBody": openapi.batch_body(limit)}, responses={
                     200: ok(openapi.BatchAnswer, "One result per item, in the order sent"),
                     **errors, **problems(
                         (413, f"The body is larger than the limit, or holds more than"
                               f" {limit} events"),
                         (422, 'A JSON body that is not {"events": [...]}'))})
    async def post_batch(request: Request) -> Response:
        """Publish up to `max_batch_events` events; valid ones are accepted regardless."""
        return await timed("/v1/events/batch", routes.many, request)

    return router
