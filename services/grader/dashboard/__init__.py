"""The dashboard (CONTRACT §8): one page at `/`, and the aggregates it draws.

The page and its scripts are files of this package (no CDN: it works offline); they hold
no data, so they are served without a key. Everything the page shows comes from `/v1`
routes behind the same API keys as the rest (`tiers:read`), the key typed into the page
and sent in the `Authorization` header, never in a URL.

With a million customers nothing here reads every customer per request: the tier counts
and the daily changes are computed at most once per `CACHE_S` by the API process (one
scan of `customers`, one range of `tier_changes` by its BRIN index on `created_at`), and
the scatter is a sample of pages of `customers` (`TABLESAMPLE SYSTEM`), a few thousand
customers whose metrics are computed from their stored aggregates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, Field

from services.grader import repository as repo
from services.grader.api.customers import answer
from services.grader.api.deps import ConnDep, Grader, GraderDep
from services.grader.api.explain import MONEY
from services.grader.api.stats import distribution
from services.grader.grading.conditions import All, Condition, Leaf, Not, leaves
from services.grader.grading.metrics import METRIC_NAMES, compute_metrics
from services.grader.grading.policy import ActivePolicy, Ladder
from shared.http import ok, problem, problems

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript", "charts.js": "text/javascript",
          "style.css": "text/css"}
CACHE_S = 30.0
ACTIVITY_DAYS = 30
SAMPLE_MAX = 5000
QUADRANTS = ("high_high", "high_low", "low_high", "low_low")  # x then y
SYMBOLS = {">=": "≥", ">": ">", "<=": "≤", "<": "<", "==": "=", "!=": "≠"}

page = APIRouter(include_in_schema=False)
router = APIRouter(prefix="/v1/dashboard", tags=["dashboard"])


# --- the page ------------------------------------------------------------------------------

@page.get("/")
async def index() -> HTMLResponse:
    """The dashboard page."""
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"),
                        headers={"Cache-Control": "no-cache"})


@page.get("/dashboard/{name}")
async def asset(name: str) -> Response:
    """The page's scripts and style, from the installed package."""
    media = ASSETS.get(name)
    if media is None:
        return problem(404, f"No dashboard file {name!r}")
    return FileResponse(STATIC / name, media_type=media, headers={"Cache-Control": "no-cache"})


# --- the policy in words -------------------------------------------------------------------

def metric_words(metric: str) -> str:
    """`spend_365d` → "spend in the last 365 days"."""
    for prefix, noun in (("spend_", "spend"), ("orders_", "orders"),
                         ("interactions_", "interactions"), ("referrals_", "referrals"),
                         ("complaints_", "complaints")):
        if metric.startswith(prefix):
            rest = metric[len(prefix):]
            if rest == "total":
                return f"{noun} in total"
            if rest.endswith("d") and rest[:-1].isdigit():
                return f"{noun} in the last {rest[:-1]} days"
    return WORDS.get(metric, metric.replace("_", " "))


WORDS = {
    "avg_order_value_365d": "average order in the last 365 days",
    "days_since_first_purchase": "days since the first purchase",
    "days_since_last_purchase": "days since the last purchase",
    "days_since_last_interaction": "days since the last interaction",
    "days_since_last_activity": "days since the last activity",
    "distinct_categories": "categories bought from",
    "avg_rating": "average rating", "ratings_count": "ratings given", "last_nps": "last NPS",
}


def number_words(metric: str, value: Decimal) -> str:
    """A threshold as people write it: money with cents and thousands, counts plainly."""
    if metric.startswith(MONEY):
        return f"{value:,.2f}"
    return f"{int(value):,}" if value == value.to_integral_value() else f"{value:,}"


def condition_words(cond: Condition, *, nested: bool = False) -> str:
    """A condition in words: "spend in the last 365 days ≥ 50,000.00 and orders ... ≥ 12"."""
    if isinstance(cond, Leaf):
        return f"{metric_words(cond.metric)} {SYMBOLS[cond.op]} " \
               f"{number_words(cond.metric, cond.value)}"
    if isinstance(cond, Not):
        return f"not ({condition_words(cond.part)})"
    joiner = " and " if isinstance(cond, All) else " or "
    text = joiner.join(condition_words(p, nested=True) for p in cond.parts)
    return f"({text})" if nested and len(cond.parts) > 1 else text


def policy_words(active: ActivePolicy) -> list[dict[str, Any]]:
    """Every ladder and tier of the policy in words."""
    out = []
    for ladder in active.policy.ladders:
        tiers = []
        for tier in ladder.tiers:
            tiers.append({
                "name": tier.name, "label": tier.label,
                "when": condition_words(tier.when) if tier.when is not None
                else "everyone else",
                "stay_when": condition_words(tier.stay_when)
                if tier.stay_when is not None else None,
                "actions": list(tier.actions),
            })
        out.append({"name": ladder.name, "label": ladder.label,
                    "downgrade_grace_days": ladder.downgrade_grace_days, "tiers": tiers})
    return out


# --- the summary: counts, daily changes, the policy --------------------------------------

ACTIVITY = """
SELECT (created_at AT TIME ZONE 'UTC')::date, ladder, payload->>'direction', count(*)
FROM tier_changes
WHERE kind = 'tier.changed' AND created_at >= $1
GROUP BY 1, 2, 3
"""


async def activity(conn: asyncpg.Connection, active: ActivePolicy, today: date,
                   days: int) -> dict[str, Any]:
    """Applied tier changes per UTC day of the last `days` days, per ladder and direction."""
    first = today - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    index = {first + timedelta(days=i): i for i in range(days)}
    ladders = {lad.name: {"up": [0] * days, "down": [0] * days, "initial": [0] * days}
               for lad in active.policy.ladders}
    for day, ladder, direction, count in await conn.fetch(ACTIVITY, since):
        series = ladders.get(ladder)
        if series is not None and direction in series and day in index:
            series[direction][index[day]] = count
    return {"days": [d.isoformat() for d in index], "ladders": ladders}


class Summary(BaseModel):
    """`GET /v1/dashboard/summary`."""

    as_of: str = Field(description="When these figures were computed: an answer is at "
                       "most 30 seconds older than the previous request (a stale one is "
                       "returned at once and refreshed behind it)")
    customers: int
    policy_version: int
    ladders: list[dict[str, Any]] = Field(
        description="Per ladder: name, label, downgrade_grace_days, and tiers best first, "
        "each with name, label, count, share (of all customers), when, stay_when (in "
        "words) and actions")
    metrics: list[str] = Field(description="Every metric the scatter can draw")
    activity: dict[str, Any] = Field(
        description="`days` (the last 30 UTC days) and, per ladder, daily counts of "
        "applied changes by direction (`up`, `down`, `initial`)")


@router.get("/summary", response_class=Response, responses={
    200: ok(Summary, "What the page's charts and policy panel show"), **problems(503)})
async def get_summary(grader: GraderDep, conn: ConnDep) -> Response:
    """Tier counts and shares per ladder, daily tier changes, the policy in words."""
    cache = grader.dashboard
    active = grader.policies.active
    if not cache.value or cache.version != active.version:
        # Nothing to show yet (or under another policy): computed now, once.
        async with cache.lock:
            if not cache.value or cache.version != active.version:
                await refresh_summary(grader, conn)
    elif time.monotonic() - cache.made > CACHE_S and cache.refreshing is None:
        # Stale: answered at once, and brought up to date behind the answer (a scan of a
        # million customers takes seconds; nobody waits for it, and an idle page costs
        # nothing).
        cache.refreshing = asyncio.create_task(_refresh_behind(grader))
    return answer(cache.value)


async def refresh_summary(grader: Grader, conn: asyncpg.Connection) -> None:
    """Compute the summary into the grader's cache."""
    cache, active = grader.dashboard, grader.policies.active
    now = datetime.now(UTC)
    counts = await distribution(conn, active)
    total = counts["customers"]
    ladders = policy_words(active)
    for ladder in ladders:
        for tier in ladder["tiers"]:
            n = counts["ladders"][ladder["name"]][tier["name"]]
            tier["count"], tier["share"] = n, round(n / total, 4) if total else 0.0
    cache.value = {
        "as_of": now.isoformat().replace("+00:00", "Z"), "customers": total,
        "policy_version": active.version, "ladders": ladders,
        "metrics": list(METRIC_NAMES),
        "activity": await activity(conn, active, now.date(), ACTIVITY_DAYS)}
    cache.made, cache.version = time.monotonic(), active.version


async def _refresh_behind(grader: Grader) -> None:
    cache = grader.dashboard
    try:
        assert grader.pool is not None  # noqa: S101 - serving
        # A connection first, then the lock, as requests take them (never the reverse).
        async with grader.pool.acquire() as conn, cache.lock:
            await refresh_summary(grader, conn)
    except Exception:
        log.warning("dashboard summary refresh failed", exc_info=True)
    finally:
        cache.refreshing = None


# --- the scatter: value against loyalty ----------------------------------------------------

ESTIMATE = "SELECT reltuples::bigint FROM pg_class WHERE oid = 'customers'::regclass"
# Pages at random, then rows at random among them (a LIMIT alone would keep the first
# pages of the heap: the oldest rows).
SAMPLED = ("SELECT * FROM (SELECT customer_id, tiers, state, policy_version, graded_on, "
           "due_on FROM customers TABLESAMPLE SYSTEM ($1)) s ORDER BY random() LIMIT $2")
FIRST = ("SELECT customer_id, tiers, state, policy_version, graded_on, due_on "
         "FROM customers LIMIT $1")


def threshold(active: ActivePolicy, ladder: Ladder, metric: str) -> Decimal | None:
    """The lowest bar on `metric` that earns a better tier of `ladder` (of any ladder when
    it has none): where the page draws the quadrant line."""
    for ladders in ((ladder,), active.policy.ladders):
        found = [leaf.value for lad in ladders for tier in lad.tiers if tier.when
                 for leaf in leaves(tier.when)
                 if leaf.metric == metric and leaf.op in (">=", ">")]
        if found:
            return min(found)
    return None


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


class Scatter(BaseModel):
    """`GET /v1/dashboard/scatter`."""

    x: str
    y: str
    ladder: str
    customers: int = Field(description="Customers stored (the planner's estimate when large)")
    sampled: int
    points: list[list[Any]] = Field(description="[x, y, tier, customer_id] per customer")
    lines: dict[str, float] = Field(description="Where the quadrant lines are: the "
                                    "policy's lowest bar on each metric, else the median")
    quadrants: dict[str, dict[str, Any]] = Field(
        description="high_high, high_low (high x, low y), low_high, low_low: the commonest "
        "tier of the ladder there (tier, label, count)")


Metric = Annotated[str, Query(max_length=64)]


@router.get("/scatter", response_class=Response, responses={
    200: ok(Scatter, "A sample of customers: value against loyalty"),
    **problems((404, "No such ladder"), (422, "Not a metric, or `limit` out of range"), 503)})
async def get_scatter(grader: GraderDep, conn: ConnDep, x: Metric = "spend_365d",
                      y: Metric = "orders_365d", ladder: str | None = None,
                      limit: Annotated[int, Query(ge=10, le=SAMPLE_MAX)] = 2000) -> Response:
    """Up to `limit` customers sampled at random pages of the table, each with two metrics
    and their tier on `ladder` (default: the first), and the quadrant lines."""
    active = grader.policies.active
    for name, value in (("x", x), ("y", y)):
        if value not in METRIC_NAMES:
            return problem(422, f"{name}: not a metric", errors=[{
                "field": f"query.{name}", "reason": f"one of {', '.join(METRIC_NAMES)}"}])
    chosen = active.policy.ladders[0] if ladder is None else next(
        (lad for lad in active.policy.ladders if lad.name == ladder), None)
    if chosen is None:
        return problem(404, f"The policy in force has no ladder {ladder!r}")
    estimate = int(await conn.fetchval(ESTIMATE) or 0)
    if estimate <= 2 * limit:  # small, or not analysed yet: count it
        estimate = int(await conn.fetchval("SELECT count(*) FROM customers"))
    if estimate <= 2 * limit:
        rows = await conn.fetch(FIRST, limit)
    else:
        # Pages at random; twice what is needed, so that LIMIT rarely finds too few.
        rows = await conn.fetch(SAMPLED, min(100.0, 200.0 * limit / estimate), limit)
    today = datetime.now(UTC).date()
    prefix = chosen.name + ":"
    points = []
    for row in rows:
        try:
            state = repo.decode_state(row[0], row[2], row[3], row[4], row[5])
        except repo.StateCorrupt:
            continue
        metrics = compute_metrics(state.aggregates, today, (x, y))
        tier = next((t[len(prefix):] for t in row[1] if t.startswith(prefix)), None)
        points.append([_float(metrics[x]), _float(metrics[y]), tier, row[0]])
    lines = {}
    for axis, metric, index in (("x", x, 0), ("y", y, 1)):
        bar = threshold(active, chosen, metric)
        lines[axis] = float(bar) if bar is not None else _median(
            [p[index] for p in points if p[index] is not None])
    where: dict[str, Counter[str]] = {q: Counter() for q in QUADRANTS}
    for px, py, tier, _ in points:
        if px is None or py is None or tier is None:
            continue
        key = f"{'high' if px >= lines['x'] else 'low'}_{'high' if py >= lines['y'] else 'low'}"
        where[key][tier] += 1
    labels = {t.name: t.label for t in chosen.tiers}
    quadrants = {}
    for key, counter in where.items():
        top = counter.most_common(1)
        quadrants[key] = ({"tier": top[0][0], "label": labels.get(top[0][0], top[0][0]),
                           "count": sum(counter.values())} if top
                          else {"tier": None, "label": None, "count": 0})
    return answer({"x": x, "y": y, "ladder": chosen.name,
                   "customers": estimate, "sampled": len(points),
                   "points": points, "lines": lines, "quadrants": quadrants})


def _float(value: int | Decimal | None) -> float | None:
    return None if value is None else float(value)
