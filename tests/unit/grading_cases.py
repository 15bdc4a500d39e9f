"""Policies, histories and gradings for the properties of the grading core: random
ladders over every kind of metric and op, histories around the windows' edges, and a
customer graded as the owner grades them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from services.grader.grading.customer import CustomerState, grade_customer
from services.grader.grading.policy import ActivePolicy
from shared.events import Event
from tests.unit.factories import TODAY, at, feedback, fold, interaction, purchase, refund

PROPERTY = settings(
    derandomize=True, database=None, deadline=None, max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
T = TODAY.toordinal()


def policy(*ladders: dict[str, Any]) -> ActivePolicy:
    return ActivePolicy.from_document(1, {"ladders": list(ladders)})


def spend_ladder(grace: int = 0) -> dict[str, Any]:
    return {"name": "tier", "downgrade_grace_days": grace, "tiers": [
        {"name": "gold", "when": {"metric": "spend_365d", "op": ">=", "value": 10000}},
        {"name": "basic"}]}


def noon(ordinal: int) -> datetime:
    d = datetime.fromordinal(ordinal)
    return datetime(d.year, d.month, d.day, 12, tzinfo=UTC)


def graded(events: list[Event], active: ActivePolicy, today: int = T) -> CustomerState:
    state = CustomerState("c-1", fold(events))
    grade_customer(state, active, now=noon(today), today=datetime.fromordinal(today).date(),
                   reason="event")
    return state


METRIC_SCALES: dict[str, tuple[int, ...]] = {
    "spend_30d": (1, 500, 5000), "spend_365d": (1, 2000, 20000), "spend_total": (100, 20000),
    "orders_7d": (1, 2), "orders_90d": (1, 3), "orders_365d": (1, 4, 8),
    "interactions_30d": (1, 2), "referrals_365d": (1,), "complaints_90d": (1,),
    "avg_order_value_365d": (100, 1000), "days_since_first_purchase": (30, 180, 400),
    "days_since_last_purchase": (7, 90, 365), "days_since_last_activity": (0, 30, 180),
    "days_since_last_interaction": (1, 60), "orders_total": (1, 5), "last_nps": (7, 9),
}
OPS = (">=", ">", "<=", "<", "==", "!=")
ORDERED = OPS[:4]  # half the policies: ordering ops only (no == or !=)


@st.composite
def conditions(draw: st.DrawFn, ops: tuple[str, ...], depth: int = 0) -> dict[str, Any]:
    if depth < 2 and draw(st.integers(0, 3)) == 0:
        kind = draw(st.sampled_from(("all", "any", "not")))
        if kind == "not":
            return {"not": draw(conditions(ops, depth + 1))}
        return {kind: draw(st.lists(conditions(ops, depth + 1), min_size=1, max_size=3))}
    metrics = sorted(METRIC_SCALES if ops == OPS else set(METRIC_SCALES) - {AVERAGE})
    metric = draw(st.sampled_from(metrics))
    return {"metric": metric, "op": draw(st.sampled_from(ops)),
            "value": draw(st.sampled_from(METRIC_SCALES[metric]))}


AVERAGE = "avg_order_value_365d"


@st.composite
def ladders(draw: st.DrawFn, name: str) -> dict[str, Any]:
    count = draw(st.integers(1, 3))
    ops = draw(st.sampled_from((OPS, ORDERED)))
    tiers: list[dict[str, Any]] = []
    for i in range(count):
        tier: dict[str, Any] = {"name": f"t{i}", "when": draw(conditions(ops))}
        if draw(st.booleans()):
            tier["stay_when"] = draw(conditions(ops))
        tiers.append(tier)
    tiers.append({"name": "rest"})
    return {"name": name, "downgrade_grace_days": draw(st.sampled_from((0, 0, 3, 30))),
            "tiers": tiers}


@st.composite
def history(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = []
    for _ in range(draw(st.integers(0, 12))):
        age = draw(st.integers(-1, 400) | st.sampled_from((0, 1, 29, 30, 179, 180, 364)))
        when = at(age, "00:01:00" if age < 0 else "12:00:00")
        kind = draw(st.sampled_from(("purchase", "purchase", "refund", "interaction",
                                     "feedback")))
        amount = str(draw(st.sampled_from((50, 700, 3000, 12000))))
        if kind == "purchase":
            events.append(purchase(amount, when))
        elif kind == "refund":
            events.append(refund(amount, when))
        elif kind == "interaction":
            events.append(interaction(when, action=draw(st.sampled_from(("visit", "referral")))))
        else:
            events.append(feedback(when, nps=draw(st.integers(0, 10)), complaint=True))
    return events


def outcome(state: CustomerState) -> dict[str, tuple[object, ...]]:
    return {name: (s.tier, s.computed, s.pending_since, s.sequence)
            for name, s in state.ladders.items()}
