"""One webhook POST: the signed request, and how it ended, never an exception."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from services.notifier.webhooks.addresses import AddressRefused, UrlGuard

USER_AGENT = "tierflow-webhooks/1"
# Read this much of an answer (so the connection can be reused); a longer one is dropped.
MAX_ANSWER_BYTES = 64 * 1024
MAX_ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class Answer:
    """A status code when the receiver answered; otherwise what went wrong."""

    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        """Any 2xx is delivered; everything else (3xx too: no redirect is followed) is not."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def kind(self) -> str:
        """For metrics: 2xx, 3xx, 4xx, 5xx, timeout, refused or error."""
        if self.status is not None:
            return f"{self.status // 100}xx"
        return self.error.split(":", 1)[0] if self.error else "error"


def connector(guard: UrlGuard, *, limit: int) -> aiohttp.TCPConnector:
    """Connections for one subscription, resolved only through the guard."""
    return aiohttp.TCPConnector(resolver=guard.resolver, limit=limit, ttl_dns_cache=10)


async def post(
    session: aiohttp.ClientSession, guard: UrlGuard, url: str, *, body: bytes,
    headers: dict[str, str], timeout_s: float,
) -> Answer:
    """POST `body` to `url`: no redirects, one timeout for the whole exchange."""
    try:
        guard.check_literal(url)
        async with session.post(
            url, data=body, headers={
                "Content-Type": "application/json", "User-Agent": USER_AGENT, **headers,
            },
            allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            await response.content.read(MAX_ANSWER_BYTES)
            return Answer(response.status, None if response.status < 300 else
                          f"http: the receiver answered {response.status}")
    except AddressRefused as exc:
        return Answer(None, _short(f"refused: {exc}"))
    except TimeoutError:
        return Answer(None, f"timeout: no answer within {timeout_s:g} s")
    except aiohttp.ClientConnectorError as exc:
        return Answer(None, _short(f"connect: {exc.os_error or exc}"))
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return Answer(None, _short(f"error: {type(exc).__name__}: {exc}"))


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
