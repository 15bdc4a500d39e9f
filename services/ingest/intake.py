"""Reading a request body safely: media type first, then a hard byte limit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request

from shared.errors import TierflowError

JSON = "application/json"
NDJSON = frozenset({"application/x-ndjson", "application/jsonl"})


class IngestProblem(TierflowError):
    """A request ingest refuses as a whole; leaves as problem+json."""

    def __init__(
        self, status: int, title: str, *, reason: str | None = None, detail: str | None = None,
        errors: Sequence[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(title)
        self.status, self.title, self.reason = status, title, reason
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
    """The body, or 413 as soon as it exceeds `limit`: Content-Length is checked first,
    and the streamed bytes are counted too, since a chunked body declares no length."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise IngestProblem(400, "Invalid Content-Length", reason="malformed")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> IngestProblem:
    return IngestProblem(
        413, "Request body too large", reason="too_large",
        detail=f"the body may hold at most {limit} bytes",
    )
