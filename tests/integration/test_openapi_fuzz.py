"""Schemathesis over the OpenAPI documents of ingest, the grader and the notifier: each app
runs in-process (its lifespan included) on the session's PostgreSQL and broker, and every
operation is called with generated requests, valid and invalid, under an admin key.

Each response must be no 5xx, have a status the document declares, with the declared
media type, headers and body schema. The seed is fixed and the examples bounded, so a run
makes the same requests every time; the counts are printed at the end of the module
(`pytest -s`) for docs/reliability.md.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
import schemathesis
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography.fernet import Fernet
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.grader.app import create_app as create_grader
from services.ingest.app import create_app as create_ingest
from services.notifier.app import create_app as create_notifier
from shared.kafka import ensure_topics
from shared.settings import GraderSettings, IngestSettings, NotifierSettings
from tests.integration.test_customer_lookups import seed
from tests.support import migrated_database, unique

pytestmark = pytest.mark.integration

ADMIN_KEY = "openapi-fuzz-admin-key-0001"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
KEYS = SecretStr(orjson.dumps({ADMIN_KEY: ["admin"]}).decode())
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
# Fixed seed, every phase (explicit examples, boundary values, random fuzzing), valid and
# invalid data.
CONFIG = schemathesis.Config.from_dict({
    "seed": 20_251_120,
    "generation": {"mode": "all"},
})
FUZZ = settings(max_examples=25, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
# JSON lines are text: a generated string is sent as it is (ingest judges each line).
schemathesis.serializer.alias(["application/x-ndjson", "application/jsonl"], "text/plain")
requests_made: Counter[str] = Counter()
failing: set[str] = set()
statuses: Counter[tuple[str, int]] = Counter()


class PublicNames(AbstractResolver):
    """Every name is one public address, without a real DNS lookup: a subscription to any
    http(s) URL with a host is registered (nothing is ever delivered: the database holds
    no tier changes)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host="93.184.215.14", port=port,
                              family=socket.AF_INET, proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None: ...


@pytest.fixture(scope="module")
async def own_database(pg_url: str) -> AsyncIterator[str]:
    """A database of the module's own: the fuzzer stores policies and subscriptions."""
    async with migrated_database(pg_url, "fuzz") as url:
        yield url


@pytest.fixture(scope="module")
def lifespans() -> Iterator[None]:
    """Schemathesis starts each app's lifespan on its first request and keeps it for the
    process: end them with the module, while the database and broker still run."""
    yield
    asgi.shutdown_lifespans()
    print(f"\nschemathesis: {sum(requests_made.values())} requests,"  # noqa: T201
          f" {len(failing)} failing operations {sorted(failing)}")
    for app, made in sorted(requests_made.items()):
        by_status = sorted(Counter({s: n for (a, s), n in statuses.items() if a == app}).items())
        print(f"  {app}: {made} requests; by status {dict(by_status)}")  # noqa: T201


@pytest.fixture(scope="module")
async def known_customer(own_database: str) -> str:
    """A graded customer in the module's database, as the consumer stores one."""
    customer_id = unique("c")
    await seed(own_database, customer_id)
    return customer_id


@pytest.fixture(scope="module")
def ingest_app(broker: str, lifespans: None) -> FastAPI:
    return create_ingest(IngestSettings(
        kafka_bootstrap=broker, topic_events=unique("fuzz-events"), api_keys=KEYS))


@pytest.fixture(scope="module")
async def grader_app(own_database: str, broker: str, lifespans: None) -> FastAPI:
    # Overrides and erasure are published to a topic nobody consumes: answered 202 at
    # once (no wait for an owner).
    settings = GraderSettings(
        database_url=SecretStr(own_database), grader_role="api", api_keys=KEYS,
        kafka_bootstrap=broker, topic_events=unique("fuzz-grader-events"),
        write_wait_seconds=0)
    await ensure_topics(settings)
    return create_grader(settings)


@pytest.fixture(scope="module")
def notifier_app(own_database: str, broker: str, lifespans: None) -> FastAPI:
    return create_notifier(NotifierSettings(
        database_url=SecretStr(own_database), kafka_bootstrap=broker,
        topic_tier_changes=unique("fuzz-changes"), api_keys=KEYS,
        webhook_secrets_key=SecretStr(Fernet.generate_key().decode())), resolver=PublicNames)


def call(name: str, app: FastAPI, case: schemathesis.Case) -> schemathesis.Response:
    """One request to the running `app`, checked; counted whatever the outcome."""
    requests_made[name] += 1
    try:
        response = case.call_and_validate(headers=AUTH, checks=CHECKS, app=app)
        statuses[name, response.status_code] += 1
        return response
    except BaseException:
        failing.add(f"{name} {case.operation.label}")
        raise


def document(app: FastAPI) -> Any:
    """The app's OpenAPI document, loaded when the module is (the document does not depend
    on the settings the running app gets from the fixtures). Schemathesis's way to load it
    from a fixture (`schemathesis.pytest.from_fixture`) fails under pytest 9 (it sets
    `request.node._nodeid`, gone from pytest), so the requests go to the fixture's running
    app through `call(app=...)` instead."""
    return schemathesis.openapi.from_dict(app.openapi(), config=CONFIG)


ingest = document(create_ingest(IngestSettings(api_keys=KEYS)))
grader = document(create_grader(GraderSettings(api_keys=KEYS)))
notifier = document(create_notifier(NotifierSettings(api_keys=KEYS)))


@ingest.parametrize()
@FUZZ
def test_ingest(case: schemathesis.Case, ingest_app: FastAPI) -> None:
    call("ingest", ingest_app, case)


@grader.parametrize()
@FUZZ
def test_grader(case: schemathesis.Case, grader_app: FastAPI) -> None:
    call("grader", grader_app, case)


@notifier.parametrize()
@FUZZ
def test_notifier(case: schemathesis.Case, notifier_app: FastAPI) -> None:
    call("notifier", notifier_app, case)


# The fuzzer's ids are random, so it never meets a stored customer or subscription: these
# check the answers about real ones against the documents too.


def test_grader_documents_a_known_customer(grader_app: FastAPI, known_customer: str) -> None:
    for case in (
        grader["/v1/customers/{customer_id}"]["GET"].Case(
            path_parameters={"customer_id": known_customer}),
        grader["/v1/customers/lookup"]["POST"].Case(
            body={"customer_ids": [known_customer, "never-seen"]}, media_type="application/json"),
    ):
        answer = call("grader", grader_app, case)
        assert answer.status_code == 200, answer.text
        assert known_customer in answer.text


def test_notifier_documents_a_subscription(notifier_app: FastAPI) -> None:
    created = call("notifier", notifier_app, notifier["/v1/subscriptions"]["POST"].Case(
        body={"url": "https://hooks.example.com/tiers", "filter": {"directions": ["up"]}},
        media_type="application/json"))
    assert created.status_code == 201, created.text
    sid = {"sid": created.json()["id"]}
    for path, method, expected in (
        ("/v1/subscriptions", "GET", 200),
        ("/v1/subscriptions/{sid}", "GET", 200),
        ("/v1/subscriptions/{sid}/rotate-secret", "POST", 200),
        ("/v1/subscriptions/{sid}/deliveries", "GET", 200),
        ("/v1/subscriptions/{sid}/deliveries/retry", "POST", 202),
        ("/v1/subscriptions/{sid}", "DELETE", 204),
    ):
        operation = notifier[path][method]
        case = operation.Case(path_parameters=sid if "{sid}" in path else {})
        assert call("notifier", notifier_app, case).status_code == expected, path
