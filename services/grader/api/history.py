"""What happened and who is where: a customer's history, a tier's members, and the tier
changes of a period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.grader import repository as repo
from services.grader.api.customers import ID_RULE, answer, valid_customer_id
from services.grader.api.deps import ConnDep, GraderDep
from shared.http import ok, problem, problems

router = APIRouter(tags=["customers"])
Limit = Annotated[int, Query(ge=1, le=1000)]


class History(BaseModel):
    """`GET /v1/customers/{id}/history`: the messages recorded for the customer (as
    subscribers receive them: docs/webhooks.md), newest first."""

    items: list[dict[str, Any]]
    next_cursor: str | None = Field(description="Pass as `cursor` for older ones")


@router.get("/v1/customers/{customer_id}/history", response_class=Response, responses={
    200: ok(History, "Tier changes and scheduled downgrades, newest first"),
    **problems((404, "No customer with this id has been seen"),
               (422, "`limit` or `cursor` out of range"), 503)})
async def get_history(customer_id: str, grader: GraderDep, conn: ConnDep, limit: Limit = 50,
                      cursor: Annotated[int | None, Query(ge=1)] = None,
                      ladder: str | None = None) -> Response:
    """A customer's tier changes, newest first; `ladder` keeps one ladder's."""
    if not valid_customer_id(customer_id):
        return problem(404, "No such customer", detail=ID_RULE)
    rows = await repo.history(conn, customer_id, before=cursor, ladder=ladder, limit=limit + 1)
    if not rows and cursor is None and not await repo.load_customers(conn, [customer_id]):
        return problem(404, f"No customer {customer_id!r} has been seen")
    more = len(rows) > limit
    rows = rows[:limit]
    return answer({"items": [payload for _, payload in rows],
                   "next_cursor": str(rows[-1][0]) if more else None})


class Members(BaseModel):
    """`GET /v1/ladders/{ladder}/tiers/{tier}/customers`."""

    ladder: str
    tier: str
    items: list[str] = Field(description="Customer ids, in id order")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


@router.get("/v1/ladders/{ladder}/tiers/{tier}/customers", response_model=None,
            tags=["stats"], responses={
                200: ok(Members, "The customers on the tier now, a page at a time"),
                **problems((404, "No such ladder or tier in the policy in force"),
                           (422, "`limit` out of range"), 503)})
async def get_members(ladder: str, tier: str, grader: GraderDep, conn: ConnDep,
                      limit: Limit = 100, cursor: str = "") -> dict[str, Any]:
    """Customers on a tier now, in id order. Pages follow the ids, so a customer who stays
    on the tier while you page is listed exactly once; one who moves in or out meanwhile
    is listed if their id comes after the page you are on. A page looks at up to 10,000
    customers: for a rare tier it may hold fewer than `limit` (even none) and still have
    a `next_cursor`; the list ends when `next_cursor` is null."""
    found = next((lad for lad in grader.policies.active.policy.ladders if lad.name == ladder),
                 None)
    if found is None or found.rank(tier) is None:
        raise HTTPException(404, f"The policy in force has no tier {tier!r} on ladder "
                                 f"{ladder!r}")
    ids, next_cursor = await repo.members(conn, ladder, tier, after=cursor, limit=limit)
    return {"ladder": ladder, "tier": tier, "items": ids, "next_cursor": next_cursor}


class Transition(BaseModel):
    """Applied tier changes of one kind in the period."""

    from_tier: str | None = Field(alias="from")
    to_tier: str = Field(alias="to")
    reason: str
    count: int


class Transitions(BaseModel):
    """`GET /v1/stats/transitions`."""

    since: str = Field(json_schema_extra={"format": "date-time"})
    until: str = Field(json_schema_extra={"format": "date-time"})
    ladders: dict[str, list[Transition]]


@router.get("/v1/stats/transitions", response_model=None, tags=["stats"], responses={
    200: ok(Transitions, "Per ladder, counts of applied changes from -> to, by reason"),
    **problems((422, "`since` or `until` is not a date-time, or `until` is not after "
                     "`since`"), 503)})
async def get_transitions(conn: ConnDep, since: datetime | None = None,
                          until: datetime | None = None) -> Any:
    """Tier changes recorded in [since, until) (default: the last 30 days), per ladder,
    from -> to and why; a first grading counts as from null."""
    until = _aware(until) if until else datetime.now(UTC)
    try:
        since = _aware(since) if since else until - timedelta(days=30)
    except OverflowError:  # `until` within 30 days of year 1
        return problem(422, "Invalid period", detail="give `since` with an `until` this early")
    if until <= since:
        return problem(422, "Invalid period", detail="`until` must be after `since`")
    ladders: dict[str, list[dict[str, Any]]] = {}
    for ladder, frm, to, reason, count in sorted(
            await repo.transitions(conn, since, until), key=lambda r: (r[0], -r[4])):
        ladders.setdefault(ladder, []).append(
            {"from": frm, "to": to, "reason": reason, "count": count})
    return {"since": since.isoformat(), "until": until.isoformat(), "ladders": ladders}


def _aware(moment: datetime) -> datetime:
    """A time without an offset is taken as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
