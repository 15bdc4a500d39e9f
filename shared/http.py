"""What every HTTP surface shares: problem+json errors, API-key auth, health routes."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse, Response

from shared.metrics import metrics_response

PROBLEM = "application/problem+json"
UNAVAILABLE: tuple[type[Exception], ...] = (
    SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError,
)
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


def install_problem_handlers(app: FastAPI) -> None:
    """Every error leaves as problem+json, never as FastAPI's default shape."""

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)  # noqa: S101
        return problem(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)  # noqa: S101
        return problem(422, "Invalid request", errors=field_errors(exc.errors()))

    async def on_unavailable(_: Request, exc: Exception) -> Response:
        return unavailable(exc)

    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    # A database or network failure is a 503 the client can retry, not a bare 500.
    for failure in UNAVAILABLE:
        app.add_exception_handler(failure, on_unavailable)


class ApiKeys:
    """Bearer keys and their scopes; `admin` implies every scope."""

    def __init__(self, scopes_by_hash: dict[str, frozenset[str]]) -> None:
        self._scopes = scopes_by_hash

    def require(self, scope: str) -> Callable[[Request], Awaitable[None]]:
        """A dependency: 401 for no or an unknown key, 403 for a key without `scope`."""

        async def check(request: Request) -> None:
            key = _bearer(request.headers.get("authorization", ""))
            if key is None:
                raise HTTPException(401, "Missing bearer key", {"WWW-Authenticate": "Bearer"})
            scopes = self._scopes_of(key)
            if scopes is None:
                raise HTTPException(401, "Unknown key", {"WWW-Authenticate": "Bearer"})
            if scope not in scopes and "admin" not in scopes:
                raise HTTPException(403, f"This key lacks the {scope} scope")

        return check

    def allows(self, authorization: str, scope: str) -> bool:
        """Whether an `Authorization` header value passes `require(scope)`."""
        key = _bearer(authorization)
        scopes = None if key is None else self._scopes_of(key)
        return scopes is not None and (scope in scopes or "admin" in scopes)

    def _scopes_of(self, key: str) -> frozenset[str] | None:
        return self._scopes.get(hashlib.sha256(key.strip().encode()).hexdigest())

    def dependency(self, scope: str) -> Any:
        """`Depends(...)` for routers."""
        return Depends(self.require(scope))


def _bearer(authorization: str) -> str | None:
    """The key of a `Bearer <key>` header value."""
    kind, _, key = authorization.partition(" ")
    return key if kind.lower() == "bearer" and key else None


def health_router(
    registry: CollectorRegistry, ready: Callable[[], Awaitable[dict[str, bool]]]
) -> APIRouter:
    """`/healthz`, `/readyz` (503 unless every dependency answers) and `/metrics`."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> Response:
        """Every dependency answers."""
        checks = await ready()
        status = 200 if all(checks.values()) else 503
        return JSONResponse({"ready": status == 200, "checks": checks}, status_code=status)

    @router.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format."""
        return metrics_response(registry)

    return router
