"""Counts of customers per ladder and tier."""

from __future__ import annotations

from typing import Any

import asyncpg
from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.grader import repository as repo
from services.grader.api.deps import ConnDep, GraderDep
from services.grader.grading.policy import ActivePolicy
from shared.http import ok, problems

router = APIRouter(prefix="/v1/stats", tags=["stats"])


async def distribution(conn: asyncpg.Connection, active: ActivePolicy) -> dict[str, Any]:
    """Per ladder of the active policy, every tier (best first) with its customer count."""
    total, counts = await repo.tier_counts(conn)
    ladders = {
        ladder.name: {tier.name: counts.get((ladder.name, tier.name), 0) for tier in ladder.tiers}
        for ladder in active.policy.ladders
    }
    return {"customers": total, "policy_version": active.version, "ladders": ladders}


class Distribution(BaseModel):
    """Customer counts per ladder per tier (for the OpenAPI document)."""

    customers: int = Field(ge=0)
    policy_version: int
    ladders: dict[str, dict[str, int]] = Field(
        description="Per ladder of the policy in force, every tier (best first) and its count")


@router.get("/distribution", response_model=None, responses={
    200: ok(Distribution, "Counts of the policy in force"), **problems(503)})
async def get_distribution(grader: GraderDep, conn: ConnDep) -> dict[str, Any]:
    """Customer counts per ladder per tier."""
    return await distribution(conn, grader.policies.active)
