"""Customer lookups: tiers as applied, metrics as of today."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from services.grader import repository as repo
from services.grader.api.deps import ConnDep, Grader, GraderDep, get_grader
from services.grader.grading.evaluate import Override, grace_ends
from services.grader.grading.messages import utc_iso
from services.grader.grading.metrics import compute_metrics, metrics_json
from services.grader.grading.policy import ActivePolicy
from shared.events import CUSTOMER_ID_PATTERN, CustomerId
from shared.http import UNAVAILABLE, ApiKeys, failed, ok, problem, problems

router = APIRouter(prefix="/v1/customers", tags=["customers"])
PREFIX = "/v1/customers/"
READ_SCOPE = "tiers:read"
# What ingest and the grader accept as a customer id: any other was never seen, and some
# (a NUL, a lone surrogate) would fail the query of every lookup batched with it.
valid_customer_id = re.compile(CUSTOMER_ID_PATTERN).fullmatch
ID_RULE = "a customer id is 1 to 128 characters from A-Z, a-z, 0-9 and . _ : @ -"


class LookupRequest(BaseModel):
    """Up to 1,000 customer ids."""

    customer_ids: list[CustomerId] = Field(min_length=1, max_length=1000)


# The answers, for the OpenAPI document only: they are built as dicts by customer_view and
# encoded by orjson, never validated (the lookup is the hottest route).
UtcTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Metric = Annotated[str | int | None, Field(
    description="Money and averages as decimal strings, counts as integers, null where"
                " undefined")]


class PendingDowngrade(BaseModel):
    """A downgrade waiting out the ladder's grace period."""

    to: str
    since: str = Field(json_schema_extra={"format": "date"})
    effective_at: UtcTime


class OverrideView(BaseModel):
    """An admin's pin of the ladder to a tier."""

    tier: str
    reason: str
    set_at: UtcTime
    expires_at: UtcTime | None = Field(description="null: until removed")


class LadderState(BaseModel):
    """Where the customer stands on one ladder."""

    tier: str = Field(description="The tier applied now")
    label: str
    since: UtcTime
    computed: str = Field(description="What the rules give today (while an override "
                          "pins the ladder: what its entry conditions give)")
    pending_downgrade: PendingDowngrade | None
    override: OverrideView | None


class Customer(BaseModel):
    """One customer's tiers and metrics."""

    customer_id: str
    policy_version: int
    updated_at: UtcTime
    tiers: dict[str, LadderState]
    metrics: dict[str, Metric] = Field(description="Every metric of docs/policy.md")


class LookupAnswer(BaseModel):
    """`POST /v1/customers/lookup`."""

    customers: list[Customer]
    not_found: list[str]


def customer_view(stored: repo.StoredCustomer, active: ActivePolicy) -> dict[str, Any]:
    """One customer as the API shows it."""
    state = stored.state
    tiers: dict[str, Any] = {}
    for ladder in active.policy.ladders:
        ladder_state = state.ladders.get(ladder.name)
        if ladder_state is None:
            continue
        rank = ladder.rank(ladder_state.tier)
        pending = None
        if ladder_state.pending_since is not None:
            effective = grace_ends(ladder_state.pending_since, ladder.downgrade_grace_days)
            pending = {"to": ladder_state.computed,
                       "since": ladder_state.pending_since.isoformat(),
                       "effective_at": utc_iso(effective)}
        pin = state.overrides.get(ladder.name)
        tiers[ladder.name] = {
            "tier": ladder_state.tier,
            "label": ladder.tiers[rank].label if rank is not None else ladder_state.tier,
            "since": utc_iso(ladder_state.since), "computed": ladder_state.computed,
            "pending_downgrade": pending,
            "override": override_view(pin) if pin is not None and not pin.ended else None,
        }
    metrics = compute_metrics(state.aggregates, datetime.now(UTC).date())
    return {
        "customer_id": state.customer_id, "policy_version": state.policy_version,
        "updated_at": utc_iso(stored.updated_at), "tiers": tiers,
        "metrics": metrics_json(metrics),
    }


def override_view(pin: Override) -> dict[str, Any]:
    """An override as the API shows it."""
    return {"tier": pin.tier, "reason": pin.reason, "set_at": utc_iso(pin.set_at),
            "expires_at": utc_iso(pin.expires_at) if pin.expires_at is not None else None}


def answer(body: dict[str, Any]) -> Response:
    """JSON encoded by orjson: returning a Response skips FastAPI's own encoding of a
    plain dict (jsonable_encoder), which cost more than the lookup itself."""
    return Response(orjson.dumps(body), media_type="application/json")


async def stored_or_problem(grader: Grader, customer_id: str,
                            ) -> repo.StoredCustomer | Response:
    """The stored customer, or the problem to answer: 404 (an id never seen, or one no
    event could carry) or 503."""
    assert grader.loader is not None  # noqa: S101 - the lifespan made it before serving
    if not valid_customer_id(customer_id):
        return problem(404, "No such customer", detail=ID_RULE)
    try:
        found = await grader.loader.load(customer_id)
    except UNAVAILABLE as exc:
        return failed(exc)
    if found is None:
        return problem(404, f"No customer {customer_id!r} has been seen")
    return found


async def one_customer(grader: Grader, customer_id: str) -> Response:
    """The answer to `GET /v1/customers/{customer_id}` (once the key is checked)."""
    found = await stored_or_problem(grader, customer_id)
    if isinstance(found, Response):
        return found
    return answer(customer_view(found, grader.policies.active))


@router.get("/{customer_id}", response_class=Response, responses={
    200: ok(Customer, "The customer"),
    **problems(
        (404, "No customer with this id has been seen (or no event could carry the id)"),
        (422, "A value the database cannot use"), 503)})
async def get_customer(customer_id: str, request: Request) -> Response:
    """One customer's tiers and metrics."""
    # Served by FastLookups for a key that may read tiers; here for the others (401, 403).
    return await one_customer(await get_grader(request), customer_id)


class FastLookups:
    """ASGI middleware for the hottest route: `GET /v1/customers/{id}` with a key that may
    read tiers is answered here, without FastAPI's routing, dependency resolution and
    request objects, which cost more CPU than the lookup (including its share of the
    query). Everything else goes on to the app, whose route of the same path documents it
    and answers a key that may not (401, 403)."""

    def __init__(self, app: ASGIApp, *, grader: Grader, keys: ApiKeys) -> None:
        self.app = app
        self.grader = grader
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        customer_id = self._lookup(scope)
        if customer_id is None:
            await self.app(scope, receive, send)
        else:
            await (await one_customer(self.grader, customer_id))(scope, receive, send)

    def _lookup(self, scope: Scope) -> str | None:
        """The id of a lookup to answer here: the path as the route matches it, and the
        key as `KeyGate` reads it (the first Authorization header)."""
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        customer_id = path[len(PREFIX):]
        if not path.startswith(PREFIX) or not customer_id or "/" in customer_id:
            return None
        authorization = next(
            (value for name, value in scope["headers"] if name == b"authorization"), b"")
        if not self.keys.allows(authorization.decode("latin-1"), READ_SCOPE):
            return None
        return customer_id


@router.post("/lookup", response_class=Response, responses={
    200: ok(LookupAnswer, "The customers found; the other ids in `not_found`"),
    **problems((422, "Not 1 to 1,000 valid customer ids; `errors` names them"), 503)})
async def lookup(body: LookupRequest, grader: GraderDep, conn: ConnDep) -> Response:
    """Many customers at once; ids never seen are listed in `not_found`."""
    ids = list(dict.fromkeys(body.customer_ids))
    found = await repo.load_customers(conn, ids)
    active = grader.policies.active
    return answer({
        "customers": [customer_view(found[i], active) for i in ids if i in found],
        "not_found": [i for i in ids if i not in found],
    })
