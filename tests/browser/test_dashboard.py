"""The dashboard in a real browser: headless Chromium from Debian's packages loads `/` from
a grader serving stored customers, takes a key typed into the page, draws every chart with
data, and finds a customer with their explanation and history. No console errors.

`TIERFLOW_SCREENSHOTS=docs/screenshots` keeps the screenshots (as docs/ shows them)."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from services.grader import repository as repo
from services.grader.app import create_app
from services.grader.grading.aggregates import apply
from services.grader.grading.customer import CustomerState, TierChange, grade_customer
from services.grader.grading.policy import ActivePolicy, default_policy_document
from shared.db.engine import connect
from shared.events import parse_event_obj
from tests.browser.cdp import INSTALL_HINT, browser, chromium_path
from tests.integration.grader_support import grader_settings
from tests.support import unique

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(chromium_path() is None, reason=INSTALL_HINT),
]
READER = "dashboard-test-reader-0001"
WRITER = "dashboard-test-writer-0001"


def history(customer: str, rng: random.Random, now: datetime) -> list[dict[str, Any]]:
    """A customer somewhere on the value/loyalty plane: 1 to 30 orders of 50 to 9,000 over
    the last 1 to 700 days, some with an NPS answer."""
    orders = rng.choice([1, 2, 3, 5, 8, 13, 20, 30])
    size = rng.choice([50, 200, 800, 2500, 6000, 9000])
    span = rng.choice([30, 120, 360, 700])
    events: list[dict[str, Any]] = [{
        "event_id": unique("ev"), "type": "purchase", "customer_id": customer,
        "occurred_at": (now - timedelta(days=rng.randint(1, span), hours=3)).isoformat(),
        "data": {"amount": f"{size * rng.uniform(0.5, 1.5):.2f}", "currency": "CNY",
                 "category": rng.choice(["shoes", "bags", "coats", "tea"])},
    } for _ in range(orders)]
    if rng.random() < 0.6:
        events.append({"event_id": unique("ev"), "type": "feedback", "customer_id": customer,
                       "occurred_at": (now - timedelta(days=2)).isoformat(),
                       "data": {"nps": rng.randint(0, 10)}})
    return events


async def store_customers(url: str, count: int) -> list[str]:
    """`count` customers graded under the default policy, stored as a consumer would."""
    now = datetime.now(UTC)
    rng = random.Random(7)
    active = ActivePolicy.from_document(1, default_policy_document())
    customers: list[tuple[int, CustomerState]] = []
    changes: list[TierChange] = []
    ids = []
    for _ in range(count):
        state = CustomerState.new(unique("shopper"))
        for doc in history(state.customer_id, rng, now):
            apply(state.aggregates, parse_event_obj(doc))
        # Graded a week ago, then today: some moved since (the changes chart has both).
        changes += grade_customer(state, active, now=now - timedelta(days=7),
                                  today=(now - timedelta(days=7)).date(), reason="event")
        changes += grade_customer(state, active, now=now, today=now.date(), reason="schedule")
        customers.append((0, state))
        ids.append(state.customer_id)
    conn = await connect(url)
    try:
        await repo.prepare(conn)
        await repo.write_checkpoint(conn, repo.Checkpoint.build(
            topic=unique("dashboard"), advances=[], event_keys=[], renewed=[],
            customers=customers, changes=changes, now=now))
    finally:
        await conn.close()
    return ids


@asynccontextmanager
async def serving(url: str) -> AsyncIterator[str]:
    """The grader's API on a free port of this machine; its base URL."""
    keys = {READER: ["tiers:read"], WRITER: ["events:write"]}
    app = create_app(grader_settings(url, "127.0.0.1:9", grader_role="api",
                                     api_keys=SecretStr(json.dumps(keys))))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the server stopped"
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def screenshots() -> Path | None:
    where = os.environ.get("TIERFLOW_SCREENSHOTS")
    return Path(where) if where else None


async def test_the_dashboard_draws_every_chart_and_finds_a_customer(
        migrated_pg: str, tmp_path: Path) -> None:
    ids = await store_customers(migrated_pg, 240)
    shots = screenshots() or tmp_path
    async with serving(migrated_pg) as base, browser() as page:
        async with httpx.AsyncClient(base_url=base,
                                     headers={"Authorization": f"Bearer {READER}"}) as api:
            summary = (await api.get("/v1/dashboard/summary")).json()
        await page.send("Page.navigate", url=base + "/")
        await page.wait_for("document.readyState === 'complete' && "
                            "document.getElementById('key') !== null")
        assert await page.evaluate("document.getElementById('main').hidden") is True

        await page.evaluate(f"""(() => {{
            document.getElementById('key').value = {json.dumps(READER)};
            document.getElementById('key-form').requestSubmit(); }})()""")
        ladders = len(summary["ladders"])
        await page.wait_for(f"document.querySelectorAll('#distribution svg[data-chart=bars]')"
                            f".length === {ladders}")
        points = await page.wait_for(
            "Number(document.querySelector('#scatter svg')?.dataset.points || 0)")
        assert points >= 200  # the sample: this test's customers and the others stored
        drawn = await page.wait_for(
            "Number(document.querySelector('#changes svg')?.dataset.points || 0)")
        assert drawn >= 1
        # The bars say what the API says, with shares; labels in the policy's language.
        bars = await page.evaluate(
            "[...document.querySelectorAll('#distribution .card')].map(c => c.textContent)")
        tier = next(lad for lad in summary["ladders"] if lad["name"] == "tier")
        vip = tier["tiers"][0]
        assert vip["label"] == "VIP客户" and f"{vip['count']:,} · " in bars[0]
        assert "VIP客户" in bars[0] and "重要客户" in bars[0]
        # Quadrant lines and the tiers that name them.
        assert await page.evaluate("document.querySelectorAll('#scatter .quadrant-line')"
                                   ".length") == 2
        labels = await page.evaluate(
            "[...document.querySelectorAll('#scatter .quadrant-label')].map(t => t.textContent)")
        assert len(labels) >= 3, labels
        policy = await page.evaluate("document.getElementById('policy').textContent")
        assert "when spend in the last 365 days ≥ 50,000.00 and orders in the last 365 days " \
               "≥ 12" in policy
        assert "stays while spend in the last 365 days ≥ 40,000.00" in policy
        overview_png = await page.screenshot(shots / "dashboard.png")
        assert overview_png > 50_000  # charts and text, not a blank page

        # Search: tiers, metrics, the explanation with its gaps and forecast, the history.
        customer = ids[3]
        await page.evaluate(f"""(() => {{
            document.getElementById('search').value = {json.dumps(customer)};
            document.getElementById('search-form').requestSubmit(); }})()""")
        await page.wait_for(f"document.getElementById('explanation')?.children.length === "
                            f"{ladders}")
        shown = await page.evaluate("document.getElementById('customer').textContent")
        assert customer in shown
        assert "needs" in shown  # a condition's gap ("needs >= 50,000.00: ... more")
        assert "Next, if nothing else happens" in shown or "No change is due" in shown
        rows = await page.evaluate("document.querySelectorAll('#history tr').length")
        assert rows >= 1 + ladders  # a header and the first grading on each ladder
        await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        await page.screenshot(shots / "dashboard-customer.png")

        # An unknown customer is said so.
        await page.evaluate("""(() => {
            document.getElementById('search').value = 'nobody-here';
            document.getElementById('search-form').requestSubmit(); })()""")
        await page.wait_for("document.getElementById('customer').textContent"
                            ".includes('No customer nobody-here')")

        assert [e for e in page.errors() if "nobody-here" not in e] == []
        # The key went in a header, never in a URL.
        assert all(READER not in u for u in page.request_urls())
        assert any(h.get("Authorization") == f"Bearer {READER}"
                   for h in page.request_headers())


async def test_a_key_that_cannot_read_tiers_is_told_and_nothing_is_shown(
        migrated_pg: str) -> None:
    async with serving(migrated_pg) as base, browser() as page:
        await page.send("Page.navigate", url=base + "/")
        await page.wait_for("document.readyState === 'complete'")
        await page.evaluate(f"""(() => {{
            document.getElementById('key').value = {json.dumps(WRITER)};
            document.getElementById('key-form').requestSubmit(); }})()""")
        text = await page.wait_for(
            "document.getElementById('status').classList.contains('error') && "
            "document.getElementById('status').textContent")
        assert "cannot read tiers" in text
        assert await page.evaluate("document.getElementById('main').hidden") is True
        assert await page.evaluate("sessionStorage.getItem('tierflow-key')") is None
