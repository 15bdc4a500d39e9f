"""HTTP plumbing shared by the client commands: an authenticated client, readable failures."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from services.cli.config import CliError

HINTS = {
    401: " (check --key, TIERFLOW_API_KEY or the data dir's api-key file)",
    403: " (this key lacks the scope; an admin key can do everything)",
}


def api_client(key: str, *, timeout: float = 60.0) -> httpx.AsyncClient:
    """A client sending `Authorization: Bearer <key>` on every request."""
    return httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=timeout)


def body_of(response: httpx.Response) -> Any:
    """The decoded JSON body, or None when it is not JSON."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def failure(service: str, response: httpx.Response) -> CliError:
    """`grader answered 401 Unknown key (hint)` from a problem+json (or any) answer."""
    doc = body_of(response)
    title = detail = ""
    if isinstance(doc, dict):
        title = str(doc.get("title") or "")
        detail = str(doc.get("detail") or "")
    text = title or response.reason_phrase
    if detail:
        text += f": {detail}"
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if isinstance(errors, list) and errors:
        text += "".join(f"\n  {e.get('field') or e.get('path')}: "
                        f"{e.get('reason') or e.get('message')}"
                        for e in errors if isinstance(e, dict))
    return CliError(f"{service} answered {response.status_code} {text}"
                    f"{HINTS.get(response.status_code, '')}")


def unreachable(service: str, url: str, exc: httpx.HTTPError) -> CliError:
    """A connection failure, with the likely fix."""
    return CliError(f"cannot reach {service} at {url} ({exc.__class__.__name__}: {exc}); "
                    "is `tierflow up` running, or is --url right?")


async def call(
    client: httpx.AsyncClient, service: str, method: str, url: str, *, body: object = None
) -> httpx.Response:
    """One request with a JSON body (if any); a connection failure becomes a CliError."""
    content = None if body is None else orjson.dumps(body)
    headers = {} if body is None else {"Content-Type": "application/json"}
    try:
        return await client.request(method, url, content=content, headers=headers)
    except httpx.TransportError as exc:
        raise unreachable(service, url, exc) from None
