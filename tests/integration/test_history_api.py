"""A customer's history, a tier's members (paged while tiers change under the pages), and
the transitions of a period, over HTTP against a grader grading real events (in a
database of the test's own, so "every member" means these)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.grader import repository as repo
from services.grader.app import create_app
from shared.kafka import ensure_topics
from tests.integration.grader_support import grader_settings, produce, purchase, running
from tests.support import eventually, migrated_database, unique

pytestmark = pytest.mark.integration


async def tier_of(client: httpx.AsyncClient, customer: str) -> str:
    r = await client.get(f"/v1/customers/{customer}")
    assert r.status_code == 200, r.text
    tier: str = r.json()["tiers"]["tier"]["tier"]
    return tier


async def test_history_members_and_transitions(pg_url: str, broker: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    async with migrated_database(pg_url, "history") as url:
        settings = grader_settings(url, broker)
        await ensure_topics(settings)
        base = unique("m")
        regulars = [f"{base}-{i}" for i in range(6)]  # ids in this order
        await produce(broker, settings.topic_events, [purchase(c, "100.00") for c in regulars])
        started = datetime.now(UTC)
        async with running(create_app(settings)) as client:

            async def all_regular() -> None:
                for c in regulars:
                    assert await tier_of(client, c) == "regular"

            await eventually(all_regular, timeout=30)

            # Members, two at a time; after the first page, a later customer moves up.
            path = "/v1/ladders/tier/tiers/regular/customers"
            first = (await client.get(path, params={"limit": 2})).json()
            assert first["items"] == regulars[:2] and first["next_cursor"] == regulars[1]
            mover = regulars[4]
            await produce(broker, settings.topic_events, [purchase(mover, "20000.00")])

            async def moved() -> None:
                assert await tier_of(client, mover) == "important"

            await eventually(moved, timeout=30)
            listed, cursor = list(first["items"]), first["next_cursor"]
            while cursor is not None:
                page = (await client.get(path, params={"limit": 2, "cursor": cursor})).json()
                listed += page["items"]
                cursor = page["next_cursor"]
            assert listed == [c for c in regulars if c != mover]
            important = (await client.get("/v1/ladders/tier/tiers/important/customers")).json()
            assert important["items"] == [mover] and important["next_cursor"] is None
            # A page looks at a bounded number of customers: a rare tier takes short pages,
            # some empty, and the list still ends with everyone, once.
            monkeypatch.setattr(repo, "MEMBERS_SCAN", 2)
            pages, cursor = [], ""
            while cursor is not None:
                page = (await client.get("/v1/ladders/tier/tiers/important/customers",
                                         params={"limit": 5, "cursor": cursor})).json()
                pages.append(page["items"])
                cursor = page["next_cursor"]
            assert [c for p in pages for c in p] == [mover] and len(pages) == 4
            assert [] in pages
            monkeypatch.undo()
            assert (await client.get("/v1/ladders/tier/tiers/nope/customers")).status_code == 404
            assert (await client.get("/v1/ladders/nope/tiers/vip/customers")).status_code == 404

            # History: newest first, a page at a time, one ladder if asked.
            history = (await client.get(f"/v1/customers/{mover}/history")).json()
            tier_moves = [(m["from_tier"], m["to_tier"], m["sequence"])
                          for m in history["items"] if m["ladder"] == "tier"]
            assert tier_moves == [("regular", "important", 2), (None, "regular", 1)]
            assert history["next_cursor"] is None
            one = (await client.get(f"/v1/customers/{mover}/history",
                                    params={"limit": 1, "ladder": "tier"})).json()
            assert [m["to_tier"] for m in one["items"]] == ["important"]
            rest = (await client.get(f"/v1/customers/{mover}/history", params={
                "limit": 1, "ladder": "tier", "cursor": one["next_cursor"]})).json()
            assert [m["to_tier"] for m in rest["items"]] == ["regular"]
            assert (await client.get(f"/v1/customers/{unique('x')}/history")).status_code == 404

            # Transitions of the period, per ladder, from -> to and why.
            period = {"since": (started - timedelta(minutes=5)).isoformat(),
                      "until": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()}
            stats = (await client.get("/v1/stats/transitions", params=period)).json()
            counts: dict[Any, int] = {(t["from"], t["to"], t["reason"]): t["count"]
                                      for t in stats["ladders"]["tier"]}
            assert counts == {(None, "regular", "event"): 6, ("regular", "important", "event"): 1}
            empty = (await client.get("/v1/stats/transitions", params={
                "since": "2001-01-01T00:00:00Z", "until": "2001-01-02T00:00:00Z"})).json()
            assert empty["ladders"] == {}
            backwards = await client.get("/v1/stats/transitions", params={
                "since": "2001-01-02T00:00:00Z", "until": "2001-01-01T00:00:00Z"})
            assert backwards.status_code == 422
            too_early = await client.get("/v1/stats/transitions",
                                         params={"until": "0001-01-05T00:00:00Z"})
            assert too_early.status_code == 422, too_early.text
