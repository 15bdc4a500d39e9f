"""`tierflow subscriptions add|list|remove|rotate-secret|deliveries|retry|listen`: the
notifier's webhook subscriptions from the shell, and a receiver to watch them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from aiohttp import web

from services.cli.client import api_client, body_of, call, failure
from services.cli.config import CliError
from services.cli.output import say

SERVICE = "notifier"


@dataclass(frozen=True)
class SubscriptionOptions:
    """One subscriptions subcommand and its arguments."""

    action: str
    url: str
    key: str
    target: str | None = None  # the receiver's URL (add) or a subscription id
    delivery: int | None = None
    ladders: Sequence[str] = field(default_factory=tuple)
    to_tiers: Sequence[str] = field(default_factory=tuple)
    directions: Sequence[str] = field(default_factory=tuple)
    types: Sequence[str] = field(default_factory=tuple)
    status: str | None = None
    limit: int = 50
    keep_previous_s: int = 86_400
    port: int = 9000


def describe_filter(document: dict[str, Any]) -> str:
    """`ladders=tier to_tiers=vip` (only the fields that narrow), or `everything`."""
    parts = [f"{name}={','.join(values)}" for name, values in document.items() if values]
    return " ".join(parts) or "everything"


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> list[str]:
    """Left-aligned columns."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in cells]


async def _expect(response: httpx.Response, *statuses: int) -> Any:
    if response.status_code not in statuses:
        raise failure(SERVICE, response)
    return body_of(response)


async def _subscribe(
    client: httpx.AsyncClient, opts: SubscriptionOptions, url: str
) -> dict[str, Any]:
    wanted = {"ladders": opts.ladders, "to_tiers": opts.to_tiers,
              "directions": opts.directions, "types": opts.types}
    body = {"url": url,
            "filter": {name: list(values) for name, values in wanted.items() if values}}
    created: dict[str, Any] = await _expect(
        await call(client, SERVICE, "POST", f"{opts.url}/v1/subscriptions", body=body), 201)
    return created


async def add(client: httpx.AsyncClient, opts: SubscriptionOptions) -> int:
    """Register a URL and print the signing secret (shown this once)."""
    created = await _subscribe(client, opts, str(opts.target))
    say(f"subscription {created['id']}")
    say(f"  url     {created['url']}")
    say(f"  filter  {describe_filter(created['filter'])}")
    say(f"  secret  {created['secret']}")
    say("Keep the secret now: it is not shown again. Verify each delivery's"
        " Tierflow-Signature with it (docs/webhooks.md).")
    return 0


async def list_all(client: httpx.AsyncClient, opts: SubscriptionOptions) -> int:
    """One line per subscription."""
    doc = await _expect(await call(client, SERVICE, "GET", f"{opts.url}/v1/subscriptions"), 200)
    items = doc["items"]
    if not items:
        say("no subscriptions (add one with: tierflow subscriptions add URL)")
        return 0
    for line in table([(s["id"], s["url"], describe_filter(s["filter"]), s["created_at"])
                       for s in items], ("ID", "URL", "FILTER", "CREATED")):
        say(line)
    return 0


async def remove(client: httpx.AsyncClient, opts: SubscriptionOptions) -> int:
    """Delete a subscription with its deliveries."""
    await _expect(await call(
        client, SERVICE, "DELETE", f"{opts.url}/v1/subscriptions/{opts.target}"), 204)
    say(f"subscription {opts.target} removed")
    return 0


async def rotate(client: httpx.AsyncClient, opts: SubscriptionOptions) -> int:
    """A new secret; the current one keeps signing for `keep_previous_s`."""
    doc = await _expect(await call(
        client, SERVICE, "POST", f"{opts.url}/v1/subscriptions/{opts.target}/rotate-secret",
        body={"previous_valid_for_s": opts.keep_previous_s}), 200)
    say(f"new secret  {doc['secret']}")
    say(f"the previous secret signs too until {doc['previous_secret_expires_at']}")
    return 0


async def deliveries(client: httpx.AsyncClient, opts: SubscriptionOptions) -> int:
    """The latest deliveries, newest first."""
    query = f"limit={opts.limit}" + (f"&status={opts.status}" if opts.status else "")
    doc = await _expect(await call(
        client, SERVICE, "GET", f"{opts.url}/v1/subscriptions/{opts.target}/deliveries?{query}"
    ), 200)
    rows = [(d["id"], d["status"], d["attempts"], d["customer_id"], d["ladder"], d["sequence"],
             d["last_status"] or d["last_error"] or "", d["next_attempt_at"] or "")
            for d in doc["items"]]
    if not rows:
        say("no deliveries")
        return 0
    for line in table(rows, ("ID", "STATUS", "ATTEMPTS", "CUSTOMER", "LADDER", "SEQ",
                             "LAST ANSWER", "NEXT ATTEMPT")):
        say(line)
    return 0


async def retry(client: httpx.AsyncClient, opts: SubscriptionOptions) -> int:
    """One more attempt for one delivery, or for every failed one."""
    base = f"{opts.url}/v1/subscriptions/{opts.target}/deliveries"
    if opts.delivery is None:
        doc = await _expect(await call(client, SERVICE, "POST", f"{base}/retry", body={}), 202)
        say(f"{doc['retried']} failed deliveries queued for one more attempt")
    else:
        await _expect(await call(client, SERVICE, "POST", f"{base}/{opts.delivery}/retry"), 202)
        say(f"delivery {opts.delivery} queued for one more attempt")
    return 0




def verified(secret: str, header: str, body: bytes) -> bool:
    """Whether a `Tierflow-Signature` header signs `body` with `secret` (any `v1=`)."""
    fields = [part.strip().split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [value for name, value in fields if name == "t"]
    if len(stamps) != 1:
        return False
    expected = hmac.new(secret.encode(), stamps[0].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for name, v in fields if name == "v1")


def describe_message(message: dict[str, Any]) -> str:
    """One line: who moved where, and what to do about it."""
    moved = f"{message.get('from_tier') or '(new)'} → {message.get('to_tier')}"
    why = f"{message.get('direction')}, {message.get('reason')}, seq {message.get('sequence')}"
    line = f"{message.get('customer_id')}  {message.get('ladder')}: {moved}  ({why})"
    if message.get("type") == "tier.downgrade_scheduled":
        line += f"  scheduled for {message.get('effective_at')}"
    if message.get("actions"):
        line += "  actions: " + ", ".join(message["actions"])
    return line


async def _until_signalled() -> None:
    """Until SIGINT or SIGTERM (handled here, so the subscription is removed either way)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def listen(client: httpx.AsyncClient, opts: SubscriptionOptions) -> int:
    """A receiver on this machine: subscribe it, print each verified delivery until Ctrl-C,
    then remove the subscription."""
    host, port = "127.0.0.1", opts.port
    secret: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        ok = bool(secret) and verified(
            secret[0], request.headers.get("Tierflow-Signature", ""), body)
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            message = {}
        mark = "✓" if ok else "✗ bad signature"
        say(f"{mark} {describe_message(message)}")
        return web.Response(status=204 if ok else 401)

    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise CliError(f"cannot listen on {host}:{port} ({exc.strerror}); try --port") from None
    created = None
    try:
        created = await _subscribe(client, opts, f"http://{host}:{port}/tierflow")
        secret.append(created["secret"])
        say(f"listening on http://{host}:{port}/tierflow as subscription {created['id']}"
            f" ({describe_filter(created['filter'])}); Ctrl-C stops and unsubscribes")
        await _until_signalled()
    finally:
        if created is not None:
            await call(client, SERVICE, "DELETE", f"{opts.url}/v1/subscriptions/{created['id']}")
            say(f"subscription {created['id']} removed")
        await runner.cleanup()
    return 0


ACTIONS: dict[str, Callable[[httpx.AsyncClient, SubscriptionOptions], Awaitable[int]]] = {
    "add": add, "list": list_all, "remove": remove, "rotate-secret": rotate,
    "deliveries": deliveries, "retry": retry, "listen": listen,
}


def run(opts: SubscriptionOptions) -> int:
    """Run one subscriptions subcommand."""
    return asyncio.run(_run(opts))


async def _run(opts: SubscriptionOptions) -> int:
    async with api_client(opts.key) as client:
        return await ACTIONS[opts.action](client, opts)
