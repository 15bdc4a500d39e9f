"""`GET /v1/customers/{id}/explain` over HTTP: a stored customer's conditions answered,
with the gap to a better tier and the day time alone will change a tier."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.cli import customer as cli
from services.cli.config import CliError
from services.grader import repository as repo
from services.grader.grading.customer import CustomerState, TierChange, fold, grade_customer
from services.grader.grading.policy import ActivePolicy, default_policy_document
from shared.db.engine import connect
from tests.integration.test_customer_lookups import (
    READER_KEY,
    WRITER_KEY,
    api_app,
    bearer,
    serving,
)
from tests.support import unique
from tests.unit.factories import purchase

pytestmark = pytest.mark.integration


async def store(url: str, state: CustomerState, changes: list[TierChange]) -> None:
    conn = await connect(url)
    try:
        await repo.prepare(conn)
        await repo.write_checkpoint(conn, repo.Checkpoint.build(
            topic=unique("explain"), advances=[], event_keys=[], renewed=[],
            customers=[(0, state)], changes=changes, now=datetime.now(UTC)))
    finally:
        await conn.close()


async def test_explain_tells_the_gap_and_the_day_of_the_next_change(
        migrated_pg: str, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    customer = unique("explained")
    bought = (now - timedelta(days=100)).replace(hour=12, minute=0)
    state = fold(CustomerState(customer), [
        purchase("4000.00", (bought + timedelta(minutes=i)).isoformat()) for i in range(12)])
    active = ActivePolicy.from_document(1, default_policy_document())
    changes = grade_customer(state, active, now=now, today=now.date(), reason="event")
    await store(migrated_pg, state, changes)

    async with serving(api_app(migrated_pg)) as client:
        r = await client.get(f"/v1/customers/{customer}/explain", headers=bearer(READER_KEY))
        assert r.status_code == 200, r.text
        body = r.json()
        assert (await client.get(f"/v1/customers/{unique('nobody')}/explain",
                                 headers=bearer(READER_KEY))).status_code == 404
        assert (await client.get(f"/v1/customers/{customer}/explain",
                                 headers=bearer(WRITER_KEY))).status_code == 403
        assert (await client.get(f"/v1/customers/{customer}/explain")).status_code == 401
        # The CLI reads the same: `tierflow customer explain|show|history ID`.
        client.headers.update(bearer(READER_KEY))
        capsys.readouterr()
        for action in ("explain", "show", "history"):
            assert await cli.ACTIONS[action](client, cli.CustomerOptions(
                action, "http://grader", READER_KEY, customer)) == 0
        printed = capsys.readouterr().out
        with pytest.raises(CliError, match="no customer"):
            await cli.explain(client, cli.CustomerOptions(
                "explain", "http://grader", READER_KEY, unique("nobody")))

    assert body["customer_id"] == customer and body["policy_version"] >= 1
    tier = body["ladders"]["tier"]
    assert (tier["tier"], tier["why"], tier["label"]) == ("important", "entry", "重要客户")
    vip = tier["tiers"][0]
    assert vip["name"] == "vip" and vip["chosen"] is False
    spend, orders = vip["when"]["parts"]
    assert spend == {
        "kind": "leaf", "passed": False, "metric": "spend_365d", "op": ">=",
        "threshold": "50000.00", "value": "48000.00", "gap": "2000.00", "needs": "more",
        "text": "spend_365d is 48,000.00, needs >= 50,000.00: 2,000.00 more"}
    assert (orders["passed"], orders["value"], orders["text"]) == (
        True, 12, "orders_365d is 12, needs >= 12: passes")
    # Nothing else happening, the last purchase leaves the lifecycle's 180 days.
    lifecycle = body["ladders"]["lifecycle"]
    churn_day = (bought + timedelta(days=180)).date()
    assert lifecycle["forecast"] == {"on": churn_day.isoformat(), "from_tier": "growing",
                                     "to_tier": "churned"}
    assert body["next_regrade_on"] <= churn_day.isoformat()
    assert body["metrics"]["spend_365d"] == "48000.00"
    assert "tier: important (重要客户) — its conditions hold" in printed
    assert "✗ spend_365d is 48,000.00, needs >= 50,000.00: 2,000.00 more" in printed
    assert f"next: growing -> churned on {churn_day.isoformat()}" in printed
    assert "    spend_365d                     48000.00" in printed  # show
    assert "#1   (first) -> important  (event)" in printed
