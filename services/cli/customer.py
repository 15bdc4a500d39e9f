"""`tierflow customer show | explain | history | override | erase ID`: one customer, read
from (or, for an admin, written through) the grader."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from services.cli.client import api_client, body_of, call, failure
from services.cli.config import CliError
from services.cli.output import say
from services.cli.policy import render


@dataclass(frozen=True)
class CustomerOptions:
    """One customer subcommand and its target."""

    action: str
    url: str
    key: str
    customer_id: str
    output: str = "text"
    limit: int = 20
    cursor: str | None = None
    ladder: str | None = None
    tier: str | None = None
    reason: str | None = None
    expires_at: str | None = None
    clear: bool = False
    yes: bool = False


async def fetch(client: httpx.AsyncClient, opts: CustomerOptions, suffix: str = "",
                params: str = "") -> Any:
    """GET /v1/customers/{id}{suffix}; a 404 says the customer was never seen."""
    url = f"{opts.url}/v1/customers/{quote(opts.customer_id, safe='')}{suffix}{params}"
    response = await call(client, "grader", "GET", url)
    if response.status_code == 404:
        raise CliError(f"no customer {opts.customer_id!r} has been seen", exit_code=1)
    if response.status_code != 200:
        raise failure("grader", response)
    return body_of(response)


async def show(client: httpx.AsyncClient, opts: CustomerOptions) -> int:
    """Tiers and the metrics that are set."""
    return print_customer(await fetch(client, opts), opts)


def print_customer(doc: Any, opts: CustomerOptions) -> int:
    """A customer as `show` prints it."""
    if opts.output != "text":
        say(render(doc, opts.output))
        return 0
    say(f"{doc['customer_id']}  (policy version {doc['policy_version']}, "
        f"updated {doc['updated_at']})")
    for ladder, t in doc["tiers"].items():
        line = f"  {ladder:<12} {t['tier']}"
        if t["label"] != t["tier"]:
            line += f" ({t['label']})"
        if t["computed"] != t["tier"]:
            line += f", computed {t['computed']}"
        if t["pending_downgrade"]:
            p = t["pending_downgrade"]
            line += f", to {p['to']} from {p['effective_at']}"
        if t.get("override"):
            o = t["override"]
            line += f", pinned ({o['reason']}) until {o['expires_at'] or 'cleared'}"
        say(line + f"  since {t['since']}")
    say("  metrics:")
    for name, value in doc["metrics"].items():
        if value not in (None, 0, "0.00"):
            say(f"    {name:<30} {value}")
    return 0


async def explain(client: httpx.AsyncClient, opts: CustomerOptions) -> int:
    """Every ladder: the tier and why, each tier's conditions, the forecast."""
    doc = await fetch(client, opts, "/explain")
    if opts.output != "text":
        say(render(doc, opts.output))
        return 0
    say(f"{doc['customer_id']}  as of {doc['as_of']} (policy version {doc['policy_version']})")
    for name, ladder in doc["ladders"].items():
        say("")
        head = f"{name}: {ladder['tier']} ({ladder['label']}) — {WHY[ladder['why']]}"
        if ladder.get("override"):
            o = ladder["override"]
            head += (f" ({o['reason']}; set {o['set_at']}, until "
                     f"{o['expires_at'] or 'cleared'}; computed {ladder['computed']})")
        if ladder["pending_downgrade"]:
            p = ladder["pending_downgrade"]
            head += f"; goes to {p['to']} at {p['effective_at']} unless it recovers"
        say(head)
        for tier in ladder["tiers"]:
            mark = "*" if tier["chosen"] else " "
            say(f"  {mark} {tier['name']} ({tier['label']})" if tier["label"] != tier["name"]
                else f"  {mark} {tier['name']}")
            if tier["when"] is None:
                say("      everyone else")
            else:
                for line in condition_lines(tier["when"], 6):
                    say(line)
            if tier["stay_when"] is not None:
                say("      stays while:")
                for line in condition_lines(tier["stay_when"], 8):
                    say(line)
        forecast = ladder["forecast"]
        say(f"  next: {forecast['from_tier']} -> {forecast['to_tier']} on {forecast['on']} "
            "if nothing else happens" if forecast else
            "  next: no change unless an event, a policy or an override moves it")
    return 0


WHY = {"entry": "its conditions hold", "stay": "kept by its stay_when",
       "grace": "a downgrade is waiting out the grace period",
       "override": "pinned by an override"}


def condition_lines(node: dict[str, Any], indent: int) -> list[str]:
    """A condition as an indented tree: ✓/✗ per leaf, with its words."""
    pad = " " * indent
    mark = "✓" if node["passed"] else "✗"
    if node["kind"] == "leaf":
        return [f"{pad}{mark} {node['text']}"]
    label = {"all": "all of", "any": "any of", "not": "not"}[node["kind"]]
    lines = [f"{pad}{mark} {label}:"]
    for part in node["parts"]:
        lines += condition_lines(part, indent + 2)
    return lines


async def history(client: httpx.AsyncClient, opts: CustomerOptions) -> int:
    """The latest tier changes, newest first."""
    cursor = f"&cursor={quote(opts.cursor, safe='')}" if opts.cursor else ""
    doc = await fetch(client, opts, "/history", f"?limit={opts.limit}{cursor}")
    if opts.output != "text":
        say(render(doc, opts.output))
        return 0
    if not doc["items"]:
        say(f"{opts.customer_id}: no tier changes recorded")
    for m in doc["items"]:
        if m["type"] == "customer.erased":
            say(f"{m['erased_at']}  erased: everything before this was deleted")
            continue
        what = (f"{m['from_tier'] or '(first)'} -> {m['to_tier']}"
                if m["type"] == "tier.changed"
                else f"downgrade to {m['to_tier']} scheduled for {m.get('effective_at')}")
        say(f"{m['changed_at']}  {m['ladder']:<12} #{m['sequence']:<3} {what}  ({m['reason']})")
    if doc["next_cursor"]:
        say(f"(older ones: --cursor {doc['next_cursor']})")
    return 0


async def override(client: httpx.AsyncClient, opts: CustomerOptions) -> int:
    """Set (TIER --reason) or clear (--clear) the override on one ladder."""
    assert opts.ladder is not None  # noqa: S101 - the parser requires it
    if opts.clear:
        if opts.tier or opts.reason or opts.expires_at:
            raise CliError("--clear takes no TIER, --reason or --expires-at")
        method, body = "DELETE", None
    else:
        if not opts.tier or not opts.reason:
            raise CliError("give the TIER and --reason to set an override (or --clear)")
        method = "PUT"
        body = {"tier": opts.tier, "reason": opts.reason, "expires_at": opts.expires_at}
    return await write(client, opts, method,
                       f"/overrides/{quote(opts.ladder, safe='')}", body)


async def erase(client: httpx.AsyncClient, opts: CustomerOptions) -> int:
    """Erase the customer, once --yes says so."""
    if not opts.yes:
        raise CliError(f"erasing {opts.customer_id!r} deletes their tiers, history and "
                       "overrides and cannot be undone; add --yes to go ahead")
    return await write(client, opts, "DELETE", "", None)


async def write(client: httpx.AsyncClient, opts: CustomerOptions, method: str, suffix: str,
                body: object) -> int:
    """An admin write: the customer after it, or that it is on its way (202)."""
    url = f"{opts.url}/v1/customers/{quote(opts.customer_id, safe='')}{suffix}"
    response = await call(client, "grader", method, url, body=body)
    doc = body_of(response)
    if response.status_code == 202:
        say(f"accepted: the grader has not applied it yet (it is behind); it will, in order "
            f"with the customer's events (control {doc['control_id']})")
        return 0
    if response.status_code != 200:
        raise failure("grader", response)
    if doc.get("status") == "erased":
        say(render(doc, opts.output) if opts.output != "text" else
            f"{doc['customer_id']}: erased at {doc['erased_at']}")
        return 0
    return print_customer(doc, opts)


ACTIONS: dict[str, Callable[[httpx.AsyncClient, CustomerOptions], Awaitable[int]]] = {
    "show": show, "explain": explain, "history": history, "override": override,
    "erase": erase,
}


def run(opts: CustomerOptions) -> int:
    """Run one customer subcommand."""
    return asyncio.run(_run(opts))


async def _run(opts: CustomerOptions) -> int:
    async with api_client(opts.key) as client:
        return await ACTIONS[opts.action](client, opts)
