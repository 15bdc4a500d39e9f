"""`GET /v1/customers/{id}/explain`: every ladder's conditions answered for one customer,
the tier chosen and why, and when time alone will change it (grading/explain.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.grader.api.customers import (
    OverrideView,
    UtcTime,
    answer,
    override_view,
    stored_or_problem,
)
from services.grader.api.deps import GraderDep
from services.grader.grading.explain import (
    Answer,
    Explanation,
    GroupAnswer,
    LadderAnswer,
    LeafAnswer,
    explain,
)
from services.grader.grading.messages import utc_iso
from services.grader.grading.metrics import metrics_json
from shared.http import ok, problems

router = APIRouter(prefix="/v1/customers", tags=["customers"])
# Metrics that are money (shown as decimal strings with their cents).
MONEY = ("spend_", "avg_order_value_")


class Condition(BaseModel):
    """A leaf (`metric`, `op`, `threshold`, `value`, `passed`, `gap`, `text`) or a group
    (`all`/`any`/`not` with `parts`), answered for this customer."""

    kind: Literal["leaf", "all", "any", "not"]
    passed: bool
    metric: str | None = None
    op: str | None = None
    threshold: str | int | None = None
    value: str | int | None = None
    gap: str | int | None = Field(None, description="How far the value is from passing: "
                                  "`needs` more or less (null when it passes, or for == "
                                  "and !=, or a null value)")
    needs: Literal["more", "less"] | None = None
    text: str | None = Field(None, description="The leaf in words")
    parts: list[Condition] | None = None


class TierExplained(BaseModel):
    """One tier of a ladder: its conditions for this customer."""

    name: str
    label: str
    when: Condition | None = Field(description="null for the last tier: everyone else")
    stay_when: Condition | None
    chosen: bool


class Forecast(BaseModel):
    """The next change time alone brings if no event comes: on that UTC day, to that tier."""

    on: str = Field(json_schema_extra={"format": "date"})
    from_tier: str
    to_tier: str


class LadderExplained(BaseModel):
    """Where the customer stands on one ladder, and why."""

    tier: str
    label: str
    computed: str = Field(description="What the rules give today")
    why: Literal["entry", "stay", "grace", "override"] = Field(
        description="entry: the tier's `when` holds and no better one's does; stay: its "
                    "`stay_when` keeps the customer in it; grace: a downgrade waits out the "
                    "ladder's grace period; override: an admin pinned the tier")
    pending_downgrade: dict[str, str] | None
    override: OverrideView | None
    tiers: list[TierExplained]
    forecast: Forecast | None = Field(description="null: nothing but an event, a policy or "
                                                  "an override changes this tier")


class Explained(BaseModel):
    """`GET /v1/customers/{id}/explain`."""

    customer_id: str
    policy_version: int
    as_of: str = Field(json_schema_extra={"format": "date"})
    next_regrade_on: str | None = Field(
        json_schema_extra={"format": "date"},
        description="The UTC day the customer's owner will next re-grade them without an "
                    "event (after a day with events: the next day, which works out the exact "
                    "one); that re-grade may change nothing")
    ladders: dict[str, LadderExplained]
    metrics: dict[str, str | int | None]
    explained_at: UtcTime


@router.get("/{customer_id}/explain", response_class=Response, responses={
    200: ok(Explained, "Every ladder's conditions answered, the tier chosen and why, and "
                       "the next change time alone brings"),
    **problems((404, "No customer with this id has been seen"), 503)})
async def get_explanation(customer_id: str, grader: GraderDep) -> Response:
    """Why the customer has each tier, what they lack for a better one, and when their
    tier will change if nothing else happens."""
    found = await stored_or_problem(grader, customer_id)
    if isinstance(found, Response):
        return found
    now = datetime.now(UTC)
    return answer(explanation_view(explain(found.state, grader.policies.active, now=now), now))


def explanation_view(e: Explanation, now: datetime) -> dict[str, Any]:
    """An explanation as the API shows it."""
    return {
        "customer_id": e.customer_id, "policy_version": e.policy_version,
        "as_of": e.as_of.isoformat(),
        "next_regrade_on": e.due_on.isoformat() if e.due_on else None,
        "ladders": {ladder.name: _ladder(ladder) for ladder in e.ladders},
        "metrics": metrics_json(e.metrics), "explained_at": utc_iso(now),
    }


def _ladder(ladder: LadderAnswer) -> dict[str, Any]:
    chosen = next(t for t in ladder.tiers if t.chosen)
    pending = None
    if ladder.pending_to is not None and ladder.effective_at is not None:
        pending = {"to": ladder.pending_to, "effective_at": utc_iso(ladder.effective_at)}
    return {
        "tier": ladder.tier, "label": chosen.label, "computed": ladder.computed,
        "why": ladder.why, "pending_downgrade": pending,
        "override": override_view(ladder.override) if ladder.override else None,
        "tiers": [{"name": t.name, "label": t.label,
                   "when": _condition(t.when) if t.when else None,
                   "stay_when": _condition(t.stay_when) if t.stay_when else None,
                   "chosen": t.chosen} for t in ladder.tiers],
        "forecast": None if ladder.forecast is None else {
            "on": ladder.forecast.on.isoformat(), "from_tier": ladder.forecast.from_tier,
            "to_tier": ladder.forecast.to_tier},
    }


def _condition(a: Answer) -> dict[str, Any]:
    if isinstance(a, GroupAnswer):
        return {"kind": a.kind, "passed": a.passed, "parts": [_condition(p) for p in a.parts]}
    return {"kind": "leaf", "passed": a.passed, "metric": a.metric, "op": a.op,
            "threshold": _number(a.metric, a.threshold), "value": _number(a.metric, a.value),
            "gap": _number(a.metric, a.gap), "needs": a.needs, "text": leaf_text(a)}


def _number(metric: str, value: object) -> str | int | None:
    """Money as a decimal string with its cents, counts as integers."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        if metric.startswith(MONEY):
            return f"{value:.2f}" if value == value.quantize(Decimal("0.01")) else str(value)
        return int(value) if value == value.to_integral_value() else str(value)
    return value if isinstance(value, int) else str(value)


def leaf_text(a: LeafAnswer) -> str:
    """"spend_365d is 48,800.00, needs >= 50,000.00: 1,200.00 more"."""
    def shown(v: object) -> str:
        n = _number(a.metric, v)
        if isinstance(n, int):
            return f"{n:,}"
        if isinstance(n, str) and a.metric.startswith(MONEY):
            return f"{Decimal(n):,.2f}" if "." in n and len(n.split(".")[1]) == 2 else n
        return str(n)

    value = "no value" if a.value is None else shown(a.value)
    head = f"{a.metric} is {value}, needs {a.op} {shown(a.threshold)}"
    if a.passed:
        return f"{head}: passes"
    if a.gap is None:
        return f"{head}: fails"
    strict = a.op in (">", "<")
    return f"{head}: {'more than ' if strict else ''}{shown(a.gap)} {a.needs}"
