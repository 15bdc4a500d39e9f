"""Customer lookups: tiers as applied, metrics as of today."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from services.grader.api.deps import ConnDep, GraderDep
from services.grader.grading.aggregates import from_json
from services.grader.grading.evaluate import grace_ends
from services.grader.grading.metrics import compute_metrics, metrics_json
from services.grader.policies import ActivePolicy
from services.grader.state import states_from_json, utc_iso

router = APIRouter(prefix="/v1/customers", tags=["customers"])

SELECT = """
SELECT customer_id, aggregates::text, tiers::text, policy_version, updated_at
FROM customers WHERE customer_id = ANY($1::text[])
"""


class LookupRequest(BaseModel):
    """Up to 1,000 customer ids."""

    customer_ids: list[str] = Field(min_length=1, max_length=1000)


def customer_view(record: asyncpg.Record, active: ActivePolicy) -> dict[str, Any]:
    """One customer as the API shows it."""
    states = states_from_json(orjson.loads(record[2]))
    tiers: dict[str, Any] = {}
    for ladder in active.policy.ladders:
        state = states.get(ladder.name)
        if state is None:
            continue
        rank = ladder.rank(state.tier)
        pending = None
        if state.pending_since is not None:
            pending = {"to": state.computed, "since": state.pending_since.isoformat(),
                       "effective_at": utc_iso(grace_ends(state.pending_since,
                                                          ladder.downgrade_grace_days))}
        tiers[ladder.name] = {
            "tier": state.tier,
            "label": ladder.tiers[rank].label if rank is not None else state.tier,
            "since": utc_iso(state.since), "computed": state.computed,
            "pending_downgrade": pending, "override": None,
        }
    metrics = compute_metrics(from_json(orjson.loads(record[1])), datetime.now(UTC).date())
    return {
        "customer_id": record[0], "policy_version": record[3],
        "updated_at": utc_iso(record[4]), "tiers": tiers, "metrics": metrics_json(metrics),
    }


@router.get("/{customer_id}")
async def get_customer(customer_id: str, grader: GraderDep, conn: ConnDep) -> dict[str, Any]:
    """One customer's tiers and metrics."""
    rows = await conn.fetch(SELECT, [customer_id])
    if not rows:
        raise HTTPException(404, f"No customer {customer_id!r} has been seen")
    return customer_view(rows[0], grader.policies.active)


@router.post("/lookup")
async def lookup(body: LookupRequest, grader: GraderDep, conn: ConnDep) -> dict[str, Any]:
    """Many customers at once; ids never seen are listed in `not_found`."""
    ids = list(dict.fromkeys(body.customer_ids))
    rows = {r[0]: r for r in await conn.fetch(SELECT, ids)}
    active = grader.policies.active
    return {
        "customers": [customer_view(rows[i], active) for i in ids if i in rows],
        "not_found": [i for i in ids if i not in rows],
    }

