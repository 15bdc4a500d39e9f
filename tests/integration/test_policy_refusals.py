"""Policies the grader refuses: YAML that would expand, and a base currency that contradicts
TIERFLOW_BASE_CURRENCY (at the API, and when one is found stored)."""

from __future__ import annotations

import asyncpg
import pytest

from services.grader import repository as repo
from services.grader.app import create_app
from services.grader.grading.policy import default_policy_document
from services.grader.policies import PolicyCache, PolicyRefused
from shared.db.engine import asyncpg_dsn
from tests.integration.grader_support import grader_settings, running
from tests.unit.test_policy import laughs

pytestmark = pytest.mark.integration
YAML = {"Content-Type": "application/yaml"}


async def test_api_refuses_yaml_aliases_and_another_currency(migrated_pg: str) -> None:
    settings = grader_settings(migrated_pg, "127.0.0.1:9", grader_role="api")
    async with running(create_app(settings)) as client:
        before = (await client.get("/v1/policy")).json()["version"]
        refused = await client.put("/v1/policy", content=laughs(), headers=YAML)
        assert refused.status_code == 422, refused.text
        [error] = refused.json()["errors"]
        assert "aliases" in error["message"]
        checked = await client.post("/v1/policy/validate", content=laughs(), headers=YAML)
        assert checked.json()["valid"] is False

        usd = {**default_policy_document(), "base_currency": "USD"}
        refused = await client.put("/v1/policy", json=usd)
        assert refused.status_code == 422, refused.text
        assert [e["path"] for e in refused.json()["errors"]] == ["base_currency"]
        assert "TIERFLOW_BASE_CURRENCY" in refused.json()["errors"][0]["message"]
        checked = await client.post("/v1/policy/validate", json=usd)
        assert checked.json()["valid"] is False
        assert (await client.get("/v1/policy")).json()["version"] == before

        omitted = default_policy_document()
        del omitted["base_currency"]
        checked = await client.post("/v1/policy/validate", json=omitted)
        assert checked.json() == {"valid": True, "problems": []}


async def test_a_stored_policy_in_another_currency_is_never_used(migrated_pg: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(migrated_pg))
    try:
        # Stored and refused inside a transaction that is rolled back: other tests share
        # the database and its newest policy.
        outer = conn.transaction()
        await outer.start()
        try:
            usd = {**default_policy_document(), "base_currency": "USD"}
            version = await repo.insert_policy(conn, usd)
            with pytest.raises(PolicyRefused, match=f"version {version} cannot be used"):
                await PolicyCache(base_currency="CNY").load(conn)
            active = await PolicyCache(base_currency="USD").load(conn)
            assert active.version == version
        finally:
            await outer.rollback()
    finally:
        await conn.close()
