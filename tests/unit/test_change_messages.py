"""The tier-change message as stored and sent: the contract's envelope, field by field."""

from __future__ import annotations

import orjson

from services.grader.grading.customer import CustomerState, grade_customer
from services.grader.grading.messages import message_json
from tests.unit.factories import at, day, fold, purchase
from tests.unit.grading_cases import T, noon, policy, spend_ladder

ENVELOPE = ["id", "type", "schema_version", "customer_id", "ladder", "from_tier", "to_tier",
            "direction", "reason", "policy_version", "changed_at", "cause_event_id",
            "sequence", "actions", "metrics"]


def test_a_first_grading_and_a_scheduled_downgrade_as_sent() -> None:
    active = policy(spend_ladder(grace=30))
    state = CustomerState("c-9", fold([purchase("10000.50", at(364))]))
    first = grade_customer(state, active, now=noon(T), today=day(0), reason="event",
                           cause_event_id="ev-1")
    later = grade_customer(state, active, now=noon(T + 1), today=day(-1), reason="schedule")
    assert len(first) == 1 and len(later) == 1

    sent = orjson.loads(message_json(first[0]))
    assert list(sent) == ENVELOPE
    assert {k: v for k, v in sent.items() if k != "id"} == {
        "type": "tier.changed", "schema_version": 1, "customer_id": "c-9", "ladder": "tier",
        "from_tier": None, "to_tier": "gold", "direction": "initial", "reason": "event",
        "policy_version": 1, "changed_at": f"{day(0).isoformat()}T12:00:00.000Z",
        "cause_event_id": "ev-1", "sequence": 1, "actions": [],
        "metrics": {"spend_365d": "10000.50"},
    }

    scheduled = orjson.loads(message_json(later[0]))
    assert list(scheduled) == [*ENVELOPE, "effective_at"]
    assert scheduled["type"] == "tier.downgrade_scheduled"
    assert scheduled["metrics"] == {"spend_365d": "0.00"}
    assert scheduled["effective_at"] == f"{day(-31).isoformat()}T00:00:00.000Z"
