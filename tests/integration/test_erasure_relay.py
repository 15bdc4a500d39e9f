"""An erasure's notice leaves through the notifier like a tier change: on `tier-changes`,
keyed by the customer, typed `customer.erased`, before the fresh customer's first tiers."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from services.grader import repository as repo
from services.grader.grading.customer import CustomerState, fold, grade_customer
from services.grader.grading.policy import ActivePolicy, default_policy_document
from shared.db.engine import connect
from tests.integration.test_notifier_support import (
    RunningRelay,
    consume_mine,
    create_topic,
    notifier_settings,
)
from tests.support import unique
from tests.unit.factories import purchase

pytestmark = pytest.mark.integration


async def test_the_erasure_notice_is_relayed_before_the_fresh_customers_changes(
        migrated_pg: str, broker: str) -> None:
    topic = unique("tier-changes")
    await create_topic(broker, topic)
    customer = unique("erased")
    now = datetime.now(UTC)
    active = ActivePolicy.from_document(1, default_policy_document())
    # Erased, then a new event in the same checkpoint: the notice, then 4 first gradings.
    fresh = fold(CustomerState.new(customer), [purchase("80.00", now.isoformat(),
                                                        customer=customer)])
    changes = grade_customer(fresh, active, now=now, today=now.date(), reason="event")
    conn = await connect(migrated_pg)
    try:
        await repo.prepare(conn)
        await repo.write_checkpoint(conn, repo.Checkpoint.build(
            topic=unique("erasure"), advances=[], event_keys=[], renewed=[],
            customers=[(0, fresh)], changes=changes, now=now, erased=[(customer, now)]))
    finally:
        await conn.close()

    relay = RunningRelay(notifier_settings(migrated_pg, broker, topic))
    async with relay.running():
        received = await consume_mine(broker, topic, [customer], 1 + len(changes))
    notice = received[0]
    headers = dict(notice.headers)
    assert headers["tierflow-type"] == b"customer.erased"
    body = orjson.loads(notice.value)
    assert (body["type"], body["customer_id"], body["schema_version"]) == (
        "customer.erased", customer, 1)
    assert datetime.fromisoformat(body["erased_at"]) == now.replace(
        microsecond=now.microsecond // 1000 * 1000)
    assert headers["tierflow-message-id"].decode() == body["id"]
    rest = [orjson.loads(m.value) for m in received[1:]]
    assert {(m["type"], m["sequence"]) for m in rest} == {("tier.changed", 1)}
    assert relay.sample("tierflow_notifier_messages_total", kind="customer.erased",
                        outcome="sent") == 1
