"""`GET /v1/customers/{id}` answered by FastLookups is the same, byte for byte and header
for header, as the FastAPI route it stands in for, for every kind of request."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from services.grader import repository as repo
from services.grader.api.customers import FastLookups
from services.grader.app import create_app
from services.grader.grading.customer import CustomerState, fold, grade_customer
from services.grader.grading.policy import ActivePolicy, default_policy_document
from shared.db.engine import connect
from tests.integration.grader_support import ADMIN_KEY, grader_settings
from tests.support import unique
from tests.unit.factories import purchase

pytestmark = pytest.mark.integration

READER_KEY = "grader-test-reader-key-0001"
WRITER_KEY = "grader-test-writer-key-0001"


async def seed(url: str, *customer_ids: str) -> None:
    """Graded customers, stored as the consumer stores them."""
    now = datetime.now(UTC)
    active = ActivePolicy.from_document(1, default_policy_document())
    states = []
    for customer_id in customer_ids:
        state = fold(CustomerState(customer_id), [purchase("10.00", now.isoformat())])
        grade_customer(state, active, now=now, today=now.date(), reason="event")
        states.append((0, state))
    conn = await connect(url)
    try:
        await repo.prepare(conn)
        await repo.write_checkpoint(conn, repo.Checkpoint.build(
            topic=unique("lookups"), advances=[], event_keys=[], renewed=[],
            customers=states, changes=[], now=now))
    finally:
        await conn.close()


def api_app(url: str) -> FastAPI:
    keys = {ADMIN_KEY: ["admin"], READER_KEY: ["tiers:read"], WRITER_KEY: ["events:write"]}
    return create_app(grader_settings(url, "127.0.0.1:9", grader_role="api",
                                      api_keys=SecretStr(json.dumps(keys))))


def without_fast_lookups(app: FastAPI) -> FastAPI:
    """The same app answering every lookup through its FastAPI route."""
    app.user_middleware = [m for m in app.user_middleware if m.cls is not FastLookups]
    return app


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://grader") as client:
            yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_fast_lookups_answer_as_the_route_does(migrated_pg: str) -> None:
    known = unique("c")
    await seed(migrated_pg, known)
    requests = [
        (f"/v1/customers/{known}", bearer(ADMIN_KEY)),
        (f"/v1/customers/{known}", bearer(READER_KEY)),
        (f"/v1/customers/{known}?extra=1", {"Authorization": f"bearer  {READER_KEY} "}),
        (f"/v1/customers/{unique('nobody')}", bearer(READER_KEY)),
        ("/v1/customers/with%20space%27quote", bearer(READER_KEY)),
        (f"/v1/customers/{known}/", bearer(READER_KEY)),
        (f"/v1/customers/{known}", {}),
        (f"/v1/customers/{known}", bearer("not-a-key")),
        (f"/v1/customers/{known}", {"Authorization": ADMIN_KEY}),
        (f"/v1/customers/{known}", bearer(WRITER_KEY)),
    ]
    async with serving(api_app(migrated_pg)) as fast, \
            serving(without_fast_lookups(api_app(migrated_pg))) as plain:
        statuses = []
        for path, headers in requests:
            ours = await fast.get(path, headers=headers)
            theirs = await plain.get(path, headers=headers)
            assert (ours.status_code, ours.headers.raw, ours.content) == \
                (theirs.status_code, theirs.headers.raw, theirs.content), path
            statuses.append(ours.status_code)
        assert statuses == [200, 200, 200, 404, 404, 307, 401, 401, 401, 403]
        assert (await fast.get(f"/v1/customers/{known}", headers=bearer(READER_KEY))
                ).json()["customer_id"] == known


async def test_a_database_failure_is_the_same_503(migrated_pg: str) -> None:
    fast_app, plain_app = api_app(migrated_pg), without_fast_lookups(api_app(migrated_pg))
    async with serving(fast_app) as fast, serving(plain_app) as plain:
        for app in (fast_app, plain_app):
            await app.state.grader.pool.close()
        ours = await fast.get("/v1/customers/c-1", headers=bearer(READER_KEY))
        theirs = await plain.get("/v1/customers/c-1", headers=bearer(READER_KEY))
    assert ours.status_code == 503 and ours.headers["retry-after"] == "2"
    assert (ours.headers.raw, ours.content) == (theirs.headers.raw, theirs.content)
