"""The policy: read it, validate a document, store a new version (which re-grades all)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
import yaml
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response

from services.grader import jobs
from services.grader import repository as repo
from services.grader.api.deps import ConnDep, Grader, GraderDep
from services.grader.grading.messages import utc_iso
from services.grader.grading.policy import ActivePolicy, parse_policy
from services.grader.grading.whatif import Transitions
from services.grader.simulate import simulate
from shared.errors import PolicyInvalid
from shared.http import PolicyProblem, ok, problem, problems, unstorable
from shared.policy_yaml import load_policy_yaml

router = APIRouter(tags=["policy"])
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
# The request body, for the OpenAPI document: the routes read it themselves (JSON or YAML).
POLICY_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "description": "docs/policy.md"}},
    **{kind: {"schema": {"type": "string", "description": "The same document in YAML"}}
       for kind in YAML_TYPES}}}}
NOT_PARSED = (400, "The body does not parse as JSON (or YAML)")


class PolicyAnswer(BaseModel):
    """`GET /v1/policy`."""

    version: int
    policy: dict[str, Any] = Field(description="The document in force (docs/policy.md)")


class Validated(BaseModel):
    """`POST /v1/policy/validate`."""

    valid: bool
    problems: list[PolicyProblem]


class Stored(BaseModel):
    """`PUT /v1/policy`: the version stored and the job re-grading everyone."""

    version: int
    job_id: uuid.UUID


class Job(BaseModel):
    """`GET /v1/jobs/{job_id}`."""

    id: uuid.UUID
    kind: Literal["policy_regrade"]
    status: Literal["running", "done", "failed"]
    total: int
    done: int
    changed: int
    policy_version: int | None
    error: str | None


async def read_document(request: Request) -> object:
    """The body as JSON, or YAML when the content type says so; raises PolicyInvalid for
    YAML a policy may not use (anchors and aliases, too many nodes). (Its size was checked
    by the app's KeyGate: at most MAX_POLICY_BYTES.)"""
    body = await request.body()
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
    try:
        if kind in YAML_TYPES:
            return load_policy_yaml(body)
        return orjson.loads(body)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise HTTPException(400, f"The body is not valid {kind}: {exc}") from None


def text_problems(document: object, path: str = "") -> list[tuple[str, str]]:
    """Every text of the document (names and values) that PostgreSQL cannot store, as
    (path, reason), paths written as the policy's own problems are. The policy's rules do
    not look at every text, and a NUL in a label reached the database as a 503."""
    problems: list[tuple[str, str]] = []
    if isinstance(document, dict):
        for key, value in document.items():
            inner = f"{path}.{key}" if path else str(key)
            reason = unstorable(key) if isinstance(key, str) else None
            if reason is not None:
                problems.append((path or "(document)", f"a field name {reason}"))
            problems += text_problems(value, inner)
    elif isinstance(document, list):
        for i, item in enumerate(document):
            problems += text_problems(item, f"{path}[{i}]")
    elif isinstance(document, str):
        reason = unstorable(document)
        if reason is not None:
            problems.append((path or "(document)", reason))
    return problems


def checked(document: object, base_currency: str) -> list[dict[str, str]]:
    """The document's problems (texts first, then the policy's rules); empty if valid."""
    problems = text_problems(document)
    if not problems:
        try:
            parse_policy(document, base_currency=base_currency)
        except PolicyInvalid as exc:
            problems = exc.problems
    return [{"path": path, "message": message} for path, message in problems]


def _problems(exc: PolicyInvalid) -> list[dict[str, str]]:
    return [{"path": path, "message": message} for path, message in exc.problems]


async def valid_document(request: Request, grader: Grader) -> dict[str, Any] | Response:
    """The body as a valid policy document, or the 422 problem listing every problem."""
    try:
        document = await read_document(request)
        found = checked(document, grader.settings.base_currency)
    except PolicyInvalid as exc:
        found = _problems(exc)
    if found:
        return problem(422, "Invalid policy", errors=found)
    assert isinstance(document, dict)  # noqa: S101 - parse_policy accepted it
    return document


@router.get("/v1/policy", response_model=None,
            responses={200: ok(PolicyAnswer, "The policy in force")})
async def get_policy(grader: GraderDep) -> dict[str, Any]:
    """The policy in force and its version."""
    active = grader.policies.active
    return {"version": active.version, "policy": active.document}


class Version(BaseModel):
    """One stored policy version."""

    version: int
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    current: bool
    ladders: list[str]


class Versions(BaseModel):
    """`GET /v1/policy/versions`: newest first."""

    items: list[Version]
    next_cursor: str | None = Field(description="Pass as `cursor` for older versions")


@router.get("/v1/policy/versions", response_model=None,
            responses={200: ok(Versions, "Stored versions, newest first"),
                       **problems((422, "`limit` or `cursor` out of range"), 503)})
async def list_versions(grader: GraderDep, conn: ConnDep,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                        cursor: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
    """The history of the policy: every version stored, newest first."""
    rows = await repo.policy_versions(conn, before=cursor, limit=limit + 1)
    current = grader.policies.active.version
    items = [{"version": v, "created_at": utc_iso(at), "current": v == current,
              "ladders": [ladder.get("name") for ladder in doc.get("ladders", [])]}
             for v, at, doc in rows[:limit]]
    more = len(rows) > limit
    return {"items": items, "next_cursor": str(items[-1]["version"]) if more else None}


class StoredVersion(BaseModel):
    """`GET /v1/policy/versions/{version}`."""

    version: int
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    current: bool
    policy: dict[str, Any]


@router.get("/v1/policy/versions/{version}", response_model=None,
            responses={200: ok(StoredVersion, "The version's document"),
                       **problems((404, "No such version"), (422, "The version is not an integer"),
                                  503)})
async def get_version(version: int, grader: GraderDep, conn: ConnDep) -> dict[str, Any]:
    """One stored version, as it was stored."""
    found = await repo.policy_version(conn, version)
    if found is None:
        raise HTTPException(404, f"No policy version {version}")
    at, document = found
    return {"version": version, "created_at": utc_iso(at),
            "current": version == grader.policies.active.version, "policy": document}


@router.post("/v1/policy/validate", response_model=None, openapi_extra=POLICY_BODY,
             responses={200: ok(Validated, "Whether the document is valid, and why not"),
                        **problems(NOT_PARSED)})
async def validate_policy(request: Request, grader: GraderDep) -> dict[str, Any]:
    """Check a document without storing it."""
    try:
        problems = checked(await read_document(request), grader.settings.base_currency)
    except PolicyInvalid as exc:
        problems = _problems(exc)
    return {"valid": not problems, "problems": problems}


class Transition(BaseModel):
    """Customers who would go from one tier to another (`from` null: never graded on
    this ladder); a few of them by id when they move."""

    from_tier: str | None = Field(alias="from")
    to_tier: str = Field(alias="to")
    count: int
    examples: list[str]


class Postponed(BaseModel):
    """Downgrades a grace period would hold back: the tier kept, the tier computed."""

    tier: str
    computed: str
    count: int


class LadderWhatIf(BaseModel):
    """One ladder of the candidate policy."""

    transitions: list[Transition]
    postponed_downgrades: list[Postponed]


class Simulated(BaseModel):
    """`POST /v1/policy/simulate`."""

    current_version: int
    customers: int
    as_of: str = Field(json_schema_extra={"format": "date"})
    changed: int = Field(description="Customers whose tier would change on some ladder")
    ladders: dict[str, LadderWhatIf]
    seconds: float


@router.post("/v1/policy/simulate", response_model=None, openapi_extra=POLICY_BODY,
             responses={200: ok(Simulated, "Per ladder, from -> to counts over every stored "
                                           "customer, with examples; nothing is changed"),
                        **problems(NOT_PARSED, (422, "The document is invalid; `errors` "
                                                     "lists every problem"), 503)})
async def simulate_policy(request: Request, grader: GraderDep) -> Any:
    """What storing this policy now would do to every customer, without storing it."""
    document = await valid_document(request, grader)
    if isinstance(document, Response):
        return document
    settings = grader.settings
    current = grader.policies.active.version
    started, now = time.perf_counter(), datetime.now(UTC)
    async with grader.simulations:  # one at a time: each uses every core
        result = await simulate(
            settings.database_url.get_secret_value(), document, version=current + 1,
            base_currency=settings.base_currency, partitions=settings.events_partitions,
            workers=settings.simulate_workers or usable_cpus(), now=now)
    return JSONResponse(simulation_view(result, current, now, time.perf_counter() - started))


def usable_cpus() -> int:
    """The CPUs this process may run on (its CPU set, not every CPU of the host)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def simulation_view(result: Transitions, current: int, now: datetime, seconds: float,
                    ) -> dict[str, Any]:
    """The answer of simulate: moves first, then the customers who stay, by count."""
    ladders: dict[str, Any] = {}
    for ladder, counts in result.counts.items():
        examples = result.examples.get(ladder, {})
        moves = sorted(counts.items(), key=lambda item: (item[0][0] == item[0][1], -item[1]))
        ladders[ladder] = {
            "transitions": [{"from": frm, "to": to, "count": n,
                             "examples": examples.get((frm, to), [])}
                            for (frm, to), n in moves],
            "postponed_downgrades": [
                {"tier": tier, "computed": computed, "count": n}
                for (tier, computed), n in sorted(result.postponed.get(ladder, {}).items())],
        }
    return {"current_version": current, "customers": result.customers,
            "as_of": now.date().isoformat(), "changed": result.changed,
            "ladders": ladders, "seconds": round(seconds, 3)}


@router.put("/v1/policy", status_code=202, response_model=None, openapi_extra=POLICY_BODY,
            responses={202: ok(Stored, "Stored; everyone is re-graded in the job"),
                       **problems(NOT_PARSED, (422, "The document is invalid; `errors` lists"
                                                    " every problem"), 503)})
async def put_policy(request: Request, grader: GraderDep, conn: ConnDep) -> Any:
    """Store a new version; new events use it at once, everyone is re-graded in a job."""
    document = await valid_document(request, grader)
    if isinstance(document, Response):
        return document
    async with conn.transaction():
        version = await repo.insert_policy(conn, document)
        job_id = await jobs.create_regrade_job(conn, version=version)
    # The consumers see the new version at their next checkpoint (they ask on every one)
    # and re-grade the customers they own; this process uses it for lookups at once.
    grader.policies.install(ActivePolicy.from_document(
        version, document, base_currency=grader.settings.base_currency))
    return JSONResponse({"version": version, "job_id": str(job_id)}, status_code=202)


async def known_job_id(job_id: Annotated[str, Path(
        description="The job's id, as `PUT /v1/policy` answered it (a UUID): anything "
                    "else is no job, `404`")]) -> uuid.UUID:
    """The id as a UUID, or `404`: an id that is not a UUID names no job (it is not a
    malformed request), and is answered before a connection is taken."""
    try:
        return uuid.UUID(job_id)
    except ValueError:
        raise HTTPException(404, f"No job {job_id!r}: job ids are UUIDs") from None


@router.get("/v1/jobs/{job_id}", response_model=None, responses={
    200: ok(Job, "The job's progress"),
    **problems((404, "No such job (also for an id that is not a UUID)"), 503)})
async def get_job(job_id: Annotated[uuid.UUID, Depends(known_job_id)],
                  conn: ConnDep) -> dict[str, Any]:
    """A job's progress."""
    job = await jobs.get_job(conn, job_id)
    if job is None:
        raise HTTPException(404, f"No job {job_id}")
    return job
