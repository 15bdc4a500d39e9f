"""A what-if before a policy change: `POST /v1/policy/simulate` changes nothing, and its
counts are what `PUT /v1/policy` then does, transition for transition (in a database of
the test's own, so "every customer" means these)."""

from __future__ import annotations

import copy
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from services.cli import policy as cli
from services.grader.app import create_app
from services.grader.grading.policy import default_policy_document
from shared.db.tables import customers, policies, tier_changes
from shared.kafka import ensure_topics
from tests.integration.grader_support import (
    ADMIN_KEY,
    grader_settings,
    produce,
    purchase,
    running,
)
from tests.support import eventually, migrated_database, unique

pytestmark = pytest.mark.integration

SPENDS = ("60000.00", "45000.00", "12000.00", "10500.00", "9000.00", "2500.00", "20.00")


def candidate() -> dict[str, Any]:
    """vip from 30,000 and one order, important from (and staying at) 11,000, a new
    ladder."""
    doc = copy.deepcopy(default_policy_document())
    tier = doc["ladders"][0]["tiers"]
    tier[0]["when"]["all"][0]["value"] = 30000
    tier[0]["when"]["all"][1]["value"] = 1
    tier[1]["when"]["any"][0]["value"] = 11000
    tier[1]["stay_when"]["value"] = 11000
    doc["ladders"].append({"name": "big_basket", "label": "大单", "tiers": [
        {"name": "yes", "when": {"metric": "avg_order_value_365d", "op": ">=", "value": 5000}},
        {"name": "no"}]})
    return doc


async def test_simulate_counts_what_apply_then_does(
        pg_url: str, broker: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with migrated_database(pg_url, "whatif") as url:
        engine = create_async_engine(url)
        settings = grader_settings(url, broker, simulate_workers=2)
        await ensure_topics(settings)
        ids = [unique(f"w{i}") for i in range(len(SPENDS) * 3)]
        now = datetime.now(UTC)
        await produce(broker, settings.topic_events, [
            purchase(cid, SPENDS[i % len(SPENDS)], when=now - timedelta(days=i))
            for i, cid in enumerate(ids)])
        async with running(create_app(settings)) as client:

            async def all_graded() -> None:
                async with engine.connect() as conn:
                    assert await conn.scalar(select(func.count()).select_from(customers)) \
                        == len(ids)

            await eventually(all_graded, timeout=30)
            bad = await client.post("/v1/policy/simulate", json={"ladders": []})
            assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == "ladders"

            r = await client.post("/v1/policy/simulate", json=candidate())
            assert r.status_code == 200, r.text
            what_if = r.json()
            async with engine.connect() as conn:  # nothing changed
                assert await conn.scalar(select(func.count()).select_from(policies)) == 1
                assert await conn.scalar(select(func.count()).select_from(tier_changes).where(
                    tier_changes.c.payload["reason"].astext == "policy")) == 0

            # The CLI prints the same as a table (the document as YAML, labels in Chinese).
            document = tmp_path / "candidate.yaml"
            document.write_text(yaml.safe_dump(candidate(), allow_unicode=True), "utf-8")
            capsys.readouterr()
            assert await cli.simulate(client, cli.PolicyOptions(
                "simulate", "http://grader", ADMIN_KEY, str(document), "table")) == 0
            table = capsys.readouterr().out
            vip = next(t for t in what_if["ladders"]["tier"]["transitions"]
                       if (t["from"], t["to"]) == ("important", "vip"))
            assert re.search(rf"important -> vip\s+{vip['count']:,}  e\.g\. ", table), table
            assert "would keep important for its grace period, then go to regular" in table
            assert f"{len(ids):,} customers" in table and "big_basket" in table

            stored = await client.put("/v1/policy", json=candidate())
            assert stored.status_code == 202, stored.text
            job_id = stored.json()["job_id"]

            async def job_done() -> None:
                job = (await client.get(f"/v1/jobs/{job_id}")).json()
                assert job["status"] == "done", job

            await eventually(job_done, timeout=30)
            versions = (await client.get("/v1/policy/versions")).json()
            assert [(v["version"], v["current"]) for v in versions["items"]] == [(2, True),
                                                                                (1, False)]
            assert versions["items"][0]["ladders"] == ["tier", "value", "lifecycle", "nps",
                                                       "big_basket"]
            assert versions["next_cursor"] is None
            page = (await client.get("/v1/policy/versions?limit=1")).json()
            assert [v["version"] for v in page["items"]] == [2] and page["next_cursor"] == "2"
            older = (await client.get("/v1/policy/versions?limit=1&cursor=2")).json()
            assert [v["version"] for v in older["items"]] == [1]
            first = (await client.get("/v1/policy/versions/1")).json()
            assert first["policy"]["ladders"][0]["name"] == "tier" and not first["current"]
            assert (await client.get("/v1/policy/versions/99")).status_code == 404
        async with engine.connect() as conn:
            rows = (await conn.execute(select(tier_changes.c.payload).where(
                tier_changes.c.payload["reason"].astext == "policy"))).scalars().all()
        await engine.dispose()

    assert what_if["customers"] == len(ids)
    applied = Counter((p["ladder"], p["from_tier"], p["to_tier"]) for p in rows
                      if p["type"] == "tier.changed")
    postponed = Counter((p["ladder"], p["from_tier"], p["to_tier"]) for p in rows
                        if p["type"] == "tier.downgrade_scheduled")
    simulated = Counter({(ladder, t["from"], t["to"]): t["count"]
                         for ladder, body in what_if["ladders"].items()
                         for t in body["transitions"] if t["from"] != t["to"]})
    simulated_waits = Counter({(ladder, w["tier"], w["computed"]): w["count"]
                               for ladder, body in what_if["ladders"].items()
                               for w in body["postponed_downgrades"]})
    assert simulated == applied
    assert simulated_waits == postponed
    # The example: upgrades to vip, a grace period for those who fall below important,
    # and everyone starts on the new ladder.
    assert simulated[("tier", "important", "vip")] > 0
    assert simulated_waits[("tier", "important", "regular")] > 0
    assert sum(n for (ladder, frm, _), n in simulated.items() if ladder == "big_basket"
               and frm is None) == len(ids)
    assert what_if["changed"] == len(ids)
    for t in what_if["ladders"]["tier"]["transitions"]:
        assert len(t["examples"]) == (min(t["count"], 5) if t["from"] != t["to"] else 0)


async def test_a_policy_job_survives_a_grader_restart(pg_url: str, broker: str) -> None:
    """The job's customers are those still graded under an older version: a grader that
    stops half way and starts again goes on from them, and the job ends done."""
    async with migrated_database(pg_url, "restart") as url:
        engine = create_async_engine(url)
        settings = grader_settings(url, broker, regrade_chunk=1)  # many small chunks
        await ensure_topics(settings)
        ids = [unique(f"r{i}") for i in range(200)]
        await produce(broker, settings.topic_events, [purchase(c, "12000.00") for c in ids])

        async def customers_under(version: int) -> int:
            async with engine.connect() as conn:
                return int(await conn.scalar(select(func.count()).select_from(customers)
                                             .where(customers.c.policy_version == version)))

        async with running(create_app(settings)) as client:

            async def all_graded() -> None:
                assert await customers_under(1) == len(ids)

            await eventually(all_graded, timeout=30)
            stored = await client.put("/v1/policy", json=candidate())
            assert stored.status_code == 202, stored.text
            version, job_id = stored.json()["version"], stored.json()["job_id"]

            async def under_way() -> None:
                job = (await client.get(f"/v1/jobs/{job_id}")).json()
                assert job["done"] >= 1, job

            await eventually(under_way, timeout=30, interval=0.005)
        half_way = await customers_under(version)  # the grader is stopped here
        async with running(create_app(settings)) as client:

            async def job_done() -> dict[str, Any]:
                job = (await client.get(f"/v1/jobs/{job_id}")).json()
                assert job["status"] == "done", job
                return job

            job = await eventually(job_done, timeout=60)
        done = await customers_under(version)
        await engine.dispose()
    assert 0 < half_way < len(ids), half_way  # it did stop in the middle
    assert done == len(ids)
    assert (job["total"], job["done"]) == (len(ids), len(ids))
