"""Reading a request body safely: media type first, then a hard byte limit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request

from shared.errors import TierflowError
from shared.http import BodyLimit, BodyRefused

JSON = "application/json"
NDJSON = frozenset({"application/x-ndjson", "application/jsonl"})


class IngestProblem(TierflowError):
    """A request ingest refuses as a whole; leaves as problem+json."""

    def __init__(
        self, status: int, title: str, *, reason: str | None = None, detail: str | None = None,
        errors: Sequence[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
        event_type: str = "request",
    ) -> None:
        super().__init__(title)
        self.status, self.title, self.reason = status, title, reason
        self.event_type = event_type  # the metrics' `type` label of the rejection
        self.detail, self.errors, self.headers = detail, errors, headers


def media_type(request: Request, allowed: frozenset[str]) -> str:
    """The request's media type (parameters dropped), or 415."""
    value = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if value not in allowed:
        raise IngestProblem(
            415, "Unsupported media type", reason="media_type",
            detail=f"Content-Type must be one of {', '.join(sorted(allowed))}",
        )
    return value


async def read_body(request: Request, *, limit: int) -> bytes:
    """The body, or 413 as soon as it exceeds `limit` (see BodyLimit)."""
    body = BodyLimit(limit)
    chunks: list[bytes] = []
    try:
        body.check_declared(request.headers.get("content-length"))
        async for chunk in request.stream():
            body.count(chunk)
            chunks.append(chunk)
    except BodyRefused as exc:
        reason = "too_large" if exc.status_code == 413 else "malformed"
        raise IngestProblem(exc.status_code, exc.title, reason=reason,
                            detail=exc.explanation) from None
    return b"".join(chunks)
