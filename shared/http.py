"""What every HTTP surface shares: problem+json errors, the key gate in front of `/v1`,
body limits, health routes."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal

import asyncpg
import sqlalchemy.exc
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import metrics_response

PROBLEM = "application/problem+json"
UNAVAILABLE: tuple[type[Exception], ...] = (
    SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError,
)
API_PREFIX = "/v1/"
READY_TIMEOUT_S = 2.0
log = logging.getLogger(__name__)


def problem(
    status: int, title: str, *, detail: str | None = None,
    errors: Sequence[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An RFC 9457 problem document."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if errors is not None:
        body["errors"] = list(errors)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def field_errors(
    errors: Sequence[Any], *, skip: frozenset[str] = frozenset()
) -> list[dict[str, str]]:
    """pydantic errors as `{"field": "data.amount", "reason": "..."}`; union tags dropped."""
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if str(p) not in skip]
        reason = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        out.append({"field": ".".join(loc) or "(body)", "reason": reason})
    return out


def unavailable(exc: Exception) -> JSONResponse:
    """The answer when a dependency failed (one of UNAVAILABLE): a 503 to retry."""
    log.warning("a dependency failed during a request: %s", type(exc).__name__)
    return problem(503, "A dependency is unavailable", detail="Try again shortly.",
                   headers={"Retry-After": "2"})


def failed(exc: Exception) -> JSONResponse:
    """The answer to one of UNAVAILABLE: 422 for a PostgreSQL data error, which the same
    request would meet again, otherwise a 503 to retry."""
    if not is_data_error(exc):
        return unavailable(exc)
    log.warning("the database refused a value of a request: %s", type(exc).__name__)
    return problem(422, "Invalid value", detail=(
        "The request holds a value the database cannot store (such as a NUL character or"
        " a number out of range): correct it rather than retrying."))


def is_data_error(exc: Exception) -> bool:
    """A data exception (SQLSTATE class 22: a NUL in text, a number out of range), from
    asyncpg (`asyncpg.DataError` and its subclasses) or through SQLAlchemy (whose asyncpg
    dialect wraps it in a plain DBAPIError)."""
    cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    return str(getattr(cause, "sqlstate", None) or "").startswith("22")


def unstorable(text: str) -> str | None:
    """Why PostgreSQL text cannot hold `text`, or None if it can."""
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode()
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None


def storable(text: str) -> str:
    """A pydantic validator (`AfterValidator(storable)`): text PostgreSQL can hold."""
    reason = unstorable(text)
    if reason is not None:
        raise ValueError(reason)
    return text


# --- The OpenAPI documents: problem+json, the key gate, statuses each route returns ---------


class FieldError(BaseModel):
    """One problem of an event or a request: a dotted path and what is wrong there."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(examples=["data.amount"])
    reason: str = Field(examples=["must be greater than 0"])


class PolicyProblem(BaseModel):
    """One problem of a policy document."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(examples=["ladders[0].tiers"])
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document, as `problem()` writes it: `detail` and `errors` only
    when there is something to say."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["about:blank"]
    title: str
    status: int = Field(ge=400, le=599)
    detail: str = ""
    errors: list[FieldError | PolicyProblem] = Field(default_factory=list)


COMPONENTS = "#/components/schemas/"
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying",
                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
# What each error status means where no route says more.
STATUS_TEXT = {
    400: "The body is not JSON (or YAML), or Content-Length is not a number",
    401: "No key, or an unknown key",
    403: "The key lacks the scope this route needs",
    404: "Not found",
    409: "Conflict",
    413: "The body is larger than the limit",
    415: "Unsupported Content-Type",
    422: "The request breaks a rule; `errors` says where",
    503: "A dependency is unavailable: retry after Retry-After seconds",
}


def problem_response(
    status: int, description: str | None = None, *, headers: dict[str, Any] | None = None,
    retry_after: bool = False,
) -> dict[str, Any]:
    """One error status for a route's `responses=`: a problem+json document."""
    out: dict[str, Any] = {
        "description": description or STATUS_TEXT.get(status, "Error"),
        "content": {PROBLEM: {"schema": {"$ref": COMPONENTS + "Problem"}}},
    }
    all_headers = {**(headers or {})}
    if retry_after:
        all_headers.update({k: {**v, "required": True} for k, v in RETRY_AFTER.items()})
    if all_headers:
        out["headers"] = all_headers
    return out


def problems(*statuses: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route's error statuses: `problems(422, (404, "No such job"))`
    (a status alone gets the usual description). A 503 is the dependency failure of
    `unavailable()`, with Retry-After."""
    out: dict[int | str, dict[str, Any]] = {}
    for item in statuses:
        status, description = item if isinstance(item, tuple) else (item, None)
        out[status] = problem_response(status, description, retry_after=status == 503)
    return out


def ok(model: type[BaseModel], description: str) -> dict[str, Any]:
    """A 2xx answer documented by `model` (not validated against it: see document_api)."""
    return {"model": model, "description": description}


def document_api(
    app: FastAPI, *, schemas: Mapping[str, dict[str, Any]] | None = None
) -> None:
    """Make `/openapi.json` describe what the app answers beyond its routes' declarations:
    the bearer key in front of every `/v1/` route (401, 403), the body limit in front of
    every route that takes a body (413, and 400 for a Content-Length that is not a number),
    the problem+json schema, and `schemas` (JSON Schemas the routes refer to by
    `#/components/schemas/<name>`).

    Routes document their 2xx bodies with `responses=` and `response_model=None`: the
    answers are built as dicts (or bytes) on purpose, and validating them would cost the
    hot paths; tests/integration/test_openapi_fuzz.py checks them against the document.
    FastAPI's own 422 (a shape this API never sends) is removed: each route declares the
    422 it can answer, as problem+json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version,
                                   description=app.description, routes=app.routes)
            app.openapi_schema = _completed(document, schemas or {})
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _completed(document: dict[str, Any], schemas: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    components = document.setdefault("components", {})
    defined = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        defined.pop(unused, None)
    problem_schema = TypeAdapter(Problem).json_schema(ref_template=COMPONENTS + "{model}")
    defined.update(problem_schema.pop("$defs", {}))
    defined["Problem"] = problem_schema
    defined.update(schemas)
    components["securitySchemes"] = {"bearer": {
        "type": "http", "scheme": "bearer",
        "description": "An API key (TIERFLOW_API_KEYS) with the scope the route needs"}}
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            default_422 = responses.get("422", {}).get("content", {}).get("application/json")
            if default_422 is not None:
                del responses["422"]
            if path.startswith(API_PREFIX):
                operation["security"] = [{"bearer": []}]
                responses.setdefault("401", problem_response(401, headers={
                    "WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}))
                responses.setdefault("403", problem_response(403))
                if "requestBody" in operation:
                    responses.setdefault("413", problem_response(413))
                    responses.setdefault("400", problem_response(400))
    return document


class BodyRefused(HTTPException):
    """A body refused before it was read in full: 413 over the limit, 400 for a
    Content-Length that is not a number. (An HTTPException, so that FastAPI passes it on
    when it comes out of reading a body.)"""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(status, title)
        self.title, self.explanation = title, detail


class BodyLimit:
    """At most `limit` bytes: Content-Length is checked before the body is read, and the
    bytes are counted as they arrive, since a chunked body declares no length."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0

    def check_declared(self, content_length: str | None) -> None:
        """Refuse a declared length over the limit (or not a number) before reading."""
        if content_length is None:
            return
        if not content_length.isdigit():
            raise BodyRefused(400, "Invalid Content-Length",
                              "Content-Length must be a number of bytes")
        if int(content_length) > self.limit:
            raise self._too_large()

    def count(self, chunk: bytes) -> None:
        """Add a chunk that arrived; refuse once the total passes the limit."""
        self.size += len(chunk)
        if self.size > self.limit:
            raise self._too_large()

    def _too_large(self) -> BodyRefused:
        return BodyRefused(413, "Request body too large",
                           f"the body may hold at most {self.limit} bytes")


def routing_problem(request: Request, exc: StarletteHTTPException) -> Response | None:
    """The problem for what the router refuses by itself: a path no route serves (`404`)
    and a method no route of the path takes (`405`, with `Allow`); None for an error a
    route raised. Starlette raises both with only the status's phrase, which said nothing
    of what was asked."""
    path, method = request.url.path, request.method
    scope = request.scope
    if exc.status_code == 404 and "route" not in scope and "endpoint" not in scope:
        # No route matched at all (a route that did leaves its own in the scope).
        return problem(404, "Not Found", detail=f"No route serves {path}: /openapi.json "
                       "lists the routes of this process")
    if exc.status_code == 405:
        # Starlette's Allow names the methods of the first route of the path only; a path
        # served by several routes (GET and POST /v1/subscriptions) takes them all.
        allowed = _methods_of_path(request)
        if allowed and method not in allowed:  # the path matched, the method did not
            return problem(405, "Method Not Allowed",
                           headers={**(exc.headers or {}), "Allow": ", ".join(allowed)},
                           detail=f"{path} answers {', '.join(allowed)}, not {method}")
    return None


PROBED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _methods_of_path(request: Request) -> list[str]:
    """The methods some route of the app takes at the request's path, each asked of the
    app's routes as its router asks them, on a copy of the request's scope."""
    allowed = []
    for method in PROBED_METHODS:
        probe = {key: dict(value) if isinstance(value, dict) else value
                 for key, value in request.scope.items()}
        probe["method"] = method
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def install_problem_handlers(app: FastAPI) -> None:
    """Every error leaves as problem+json, never as FastAPI's default shape: also a path
    no route serves (`404`) and a wrong method (`405` with `Allow`)."""

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101
        routing = routing_problem(request, exc)
        if routing is not None:
            return routing
        return problem(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))

    async def on_body(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, BodyRefused)  # noqa: S101
        return problem(exc.status_code, exc.title, detail=exc.explanation)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)  # noqa: S101
        return problem(422, "Invalid request", errors=field_errors(exc.errors()))

    async def on_failure(_: Request, exc: Exception) -> Response:
        return failed(exc)

    # Starlette's class, which FastAPI's extends: FastAPI raises Starlette's itself (a JSON
    # body that is not UTF-8), and so does the router (404, 405).
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(BodyRefused, on_body)
    app.add_exception_handler(RequestValidationError, on_validation)
    # A database or network failure is a 503 the client can retry, not a bare 500; a
    # data error is the request's own: a 422.
    for failure in UNAVAILABLE:
        app.add_exception_handler(failure, on_failure)


class ApiKeys:
    """Bearer keys and their scopes; `admin` implies every scope."""

    def __init__(self, scopes_by_hash: dict[str, frozenset[str]]) -> None:
        self._scopes = scopes_by_hash

    def refusal(self, authorization: str, scope: str) -> Response | None:
        """401 for no or an unknown key, 403 for a key without `scope`; None to go on."""
        key = _bearer(authorization)
        if key is None:
            return problem(401, "Missing bearer key", headers={"WWW-Authenticate": "Bearer"})
        scopes = self._scopes_of(key)
        if scopes is None:
            return problem(401, "Unknown key", headers={"WWW-Authenticate": "Bearer"})
        if scope not in scopes and "admin" not in scopes:
            return problem(403, f"This key lacks the {scope} scope")
        return None

    def allows(self, authorization: str, scope: str) -> bool:
        """Whether an `Authorization` header value passes `refusal(..., scope)`."""
        key = _bearer(authorization)
        scopes = None if key is None else self._scopes_of(key)
        return scopes is not None and (scope in scopes or "admin" in scopes)

    def _scopes_of(self, key: str) -> frozenset[str] | None:
        return self._scopes.get(hashlib.sha256(key.strip().encode()).hexdigest())


def _bearer(authorization: str) -> str | None:
    """The key of a `Bearer <key>` header value."""
    kind, _, key = authorization.partition(" ")
    return key if kind.lower() == "bearer" and key else None


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (`name` in lower case), as Starlette reads it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


ADMIN_METHODS = frozenset({"PUT", "PATCH", "DELETE"})


class KeyGate:
    """ASGI middleware in front of every route under `/v1/`: the key, then the declared
    body size, are checked before the app routes the request, and the body is counted as
    it streams in. FastAPI reads and parses a route's body before it runs the route's
    dependencies, so a key checked there came after a 50 MB body had been read, and a
    malformed one answered 422 instead of 401.

    `scopes` maps path prefixes (`/v1/customers`) to the scope they need for reading and
    posting; `PUT`, `PATCH` and `DELETE` (overrides, erasure, subscriptions) and any other
    path under `/v1/` need `admin`, so a route added without a thought needs the widest
    key.
    `max_body` is None only where every route reads its body through a BodyLimit itself."""

    def __init__(self, app: ASGIApp, *, keys: ApiKeys, scopes: Mapping[str, str],
                 max_body: int | None) -> None:
        self.app = app
        self.keys = keys
        # Longest first: the most specific prefix decides.
        self.scopes = sorted(scopes.items(), key=lambda item: -len(item[0]))
        self.max_body = max_body

    def scope_for(self, path: str, method: str = "GET") -> str:
        """The scope a request to a path under `/v1/` needs."""
        if method in ADMIN_METHODS:
            return "admin"
        for prefix, needed in self.scopes:
            if path == prefix or path.startswith(prefix + "/"):
                return needed
        return "admin"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        refused = self.keys.refusal(header(scope, b"authorization") or "",
                                    self.scope_for(scope["path"], scope["method"]))
        if refused is None and self.max_body is not None:
            refused, receive = self._limited(scope, receive, self.max_body)
        if refused is not None:
            await refused(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    @staticmethod
    def _limited(scope: Scope, receive: Receive, limit: int) -> tuple[Response | None, Receive]:
        body = BodyLimit(limit)
        try:
            body.check_declared(header(scope, b"content-length"))
        except BodyRefused as exc:
            return problem(exc.status_code, exc.title, detail=exc.explanation), receive

        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.count(message.get("body", b""))
            return message

        return None, counted


Check = Callable[[], Coroutine[Any, Any, bool]]


def health_router(
    registry: CollectorRegistry, checks: Mapping[str, Check], *,
    timeout_s: float = READY_TIMEOUT_S,
) -> APIRouter:
    """`/healthz`, `/readyz` (503 unless every check passes within `timeout_s`) and
    `/metrics`."""
    router = APIRouter(tags=["health"])
    readiness = Readiness(checks, timeout_s=timeout_s)

    @router.get("/healthz", response_model=None,
                responses={200: ok(Health, "The process is alive")})
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @router.get("/readyz", response_model=None, responses={
        200: ok(Ready, "Every dependency answered in time"),
        503: ok(Ready, "A dependency did not answer in time (its check is false)")})
    async def readyz() -> Response:
        """Every dependency answers, in time."""
        results = await readiness.run()
        status = 200 if all(results.values()) else 503
        return JSONResponse({"ready": status == 200, "checks": results}, status_code=status)

    @router.get("/metrics", response_class=PlainTextResponse,
                responses={200: {"description": "Prometheus text format"}})
    async def metrics() -> Response:
        """Prometheus text format."""
        return metrics_response(registry)

    return router


class Health(BaseModel):
    """`GET /healthz`."""

    status: Literal["ok"]


class Ready(BaseModel):
    """`GET /readyz`: each check's answer."""

    ready: bool
    checks: dict[str, bool]


class Readiness:
    """Named checks run side by side; one that has not answered within `timeout_s` is
    false. A frozen database can hold a query (and even its cancellation) for ever, so a
    late check is left to finish on its own rather than awaited, and is not started again
    while it runs: probes every few seconds do not pile up stuck checks."""

    def __init__(self, checks: Mapping[str, Check], *, timeout_s: float) -> None:
        self.checks = dict(checks)
        self.timeout_s = timeout_s
        self.running: dict[str, asyncio.Task[bool]] = {}

    async def run(self) -> dict[str, bool]:
        """Each check's answer: true only if it passed within the timeout."""
        for name, check in self.checks.items():
            if name not in self.running or self.running[name].done():
                task = asyncio.create_task(check(), name=f"readiness:{name}")
                task.add_done_callback(functools.partial(self._finished, name))
                self.running[name] = task
        tasks = dict(self.running)
        await asyncio.wait(tasks.values(), timeout=self.timeout_s)
        return {name: self._passed(name, task) for name, task in tasks.items()}

    def _passed(self, name: str, task: asyncio.Task[bool]) -> bool:
        if not task.done():
            log.warning("readiness: the %s check did not answer within %.1f s",
                        name, self.timeout_s)
            task.cancel()  # not awaited: its clean-up may hang as long as the check did
            return False
        if task.cancelled() or task.exception() is not None:
            return False
        return task.result()

    def _finished(self, name: str, task: asyncio.Task[bool]) -> None:
        self.running.pop(name, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("readiness: the %s check failed: %r", name, task.exception())
