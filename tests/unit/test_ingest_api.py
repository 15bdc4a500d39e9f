"""The ingest HTTP surface (contract §3, §6) with a fake publisher in place of Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from services.ingest.app import create_app
from services.ingest.publisher import EventPublisher
from shared.errors import BrokerUnavailable
from shared.events import Event
from shared.settings import IngestSettings
from tests.support import unique

WRITER = "writer-key-0123456789"
READER = "reader-key-0123456789"
ADMIN = "admin-key-0123456789ab"
KEYS = {WRITER: ["events:write"], READER: ["tiers:read"], ADMIN: ["admin"]}
AUTH = {"Authorization": f"Bearer {WRITER}"}
PROBLEM = "application/problem+json"


class FakePublisher(EventPublisher):
    """Records what it publishes; `fail` names event_ids the 'broker' will not take."""

    def __init__(self) -> None:
        self.published: list[Event] = []
        self.fail: set[str] = set()
        self.fail_all = False
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def ready(self) -> bool:
        return not self.fail_all

    async def publish(self, events: Sequence[Event]) -> list[BaseException | None]:
        out: list[BaseException | None] = []
        for event in events:
            if self.fail_all or event.event_id in self.fail:
                out.append(BrokerUnavailable("the broker did not acknowledge in time"))
            else:
                self.published.append(event)
                out.append(None)
        return out


@pytest.fixture
def fake() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def settings() -> IngestSettings:
    return IngestSettings(api_keys=SecretStr(orjson.dumps(KEYS).decode()), max_batch_events=5)


@pytest.fixture
async def client(settings: IngestSettings, fake: FakePublisher) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, publisher=fake)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as c:
            yield c
    assert fake.stopped


def event(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": unique("ev"), "type": "purchase", "customer_id": "c-1042",
        "occurred_at": datetime.now(UTC).isoformat(), "source": "pos",
        "data": {"amount": "1299.00", "currency": "CNY", "quantity": 1},
    }
    return {**doc, **fields}


async def post(client: httpx.AsyncClient, doc: object, **headers: str) -> httpx.Response:
    return await client.post(
        "/v1/events", content=orjson.dumps(doc),
        headers={**AUTH, "Content-Type": "application/json", **headers},
    )


async def metric(client: httpx.AsyncClient, line: str) -> float:
    text = (await client.get("/metrics")).text
    found = [ln for ln in text.splitlines() if ln.startswith(line + " ")]
    return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


async def test_accepts_one_event(client: httpx.AsyncClient, fake: FakePublisher) -> None:
    doc = event()
    response = await post(client, doc)
    assert response.status_code == 202
    assert response.json() == {"event_id": doc["event_id"], "status": "accepted"}
    assert [e.event_id for e in fake.published] == [doc["event_id"]]
    assert fake.started


async def test_charset_parameter_is_fine(client: httpx.AsyncClient) -> None:
    response = await post(client, event(), **{"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 202


async def test_invalid_event_is_422_with_fields(
    client: httpx.AsyncClient, fake: FakePublisher
) -> None:
    doc = event(data={"amount": "-1", "currency": "CNY", "colour": "red"})
    response = await post(client, doc)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == 422
    assert {e["field"] for e in body["errors"]} == {"data.amount", "data.colour"}
    assert all(e["reason"] for e in body["errors"])
    assert fake.published == []


@pytest.mark.parametrize(
    ("change", "field"),
    [({"occurred_at": "2099-01-01T00:00:00Z"}, "occurred_at"),
     ({"data": {"amount": "1", "currency": "USD"}}, "data.currency"),
     ({"data": {"amount": "NaN", "currency": "CNY"}}, "data.amount"),
     ({"data": {"amount": 1_000_000_000_001, "currency": "CNY"}}, "data.amount"),
     ({"type": "feedback", "data": {"comment": "only a comment"}}, "data"),
     ({"type": "teleport"}, "type"), ({"unknown": 1}, "unknown")],
)
async def test_rules_give_422(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    response = await post(client, event(**change))
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_nan_literal_is_422(client: httpx.AsyncClient) -> None:
    body = orjson.dumps(event(data={"amount": 1, "currency": "CNY"})).replace(
        b'"amount":1', b'"amount":NaN')
    response = await client.post(
        "/v1/events", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "data.amount"


@pytest.mark.parametrize("body", [b"{", b"", b"\xff\xfe", b'{"a": 1} trailing'])
async def test_malformed_json_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post(
        "/v1/events", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-ndjson"])
async def test_wrong_media_type_is_415(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    response = await client.post("/v1/events", content=orjson.dumps(event()), headers=headers)
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM


async def test_declared_oversize_body_is_413(
    client: httpx.AsyncClient, settings: IngestSettings, fake: FakePublisher
) -> None:
    doc = event(source="x" * settings.max_body_bytes)
    response = await post(client, doc)
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert fake.published == []


async def test_chunked_oversize_body_is_413(
    client: httpx.AsyncClient, settings: IngestSettings
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1000):
            sent += 1
            yield b" " * 4096

    response = await client.post(
        "/v1/events", content=chunks(), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert "content-length" not in response.request.headers
    assert sent * 4096 < settings.max_body_bytes + 2 * 4096  # stopped reading at the limit


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-known-key-at-all"}, {"Authorization": WRITER},
     {"Authorization": "Basic d3JpdGVyOmtleQ=="}, {"Authorization": "Bearer "}],
)
async def test_no_or_unknown_key_is_401(
    client: httpx.AsyncClient, fake: FakePublisher, headers: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/events", content=orjson.dumps(event()),
        headers={"Content-Type": "application/json", **headers},
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert fake.published == []


async def test_key_without_scope_is_403(client: httpx.AsyncClient) -> None:
    response = await post(client, event(), Authorization=f"Bearer {READER}")
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM
    batch = await client.post(
        "/v1/events/batch", json={"events": []}, headers={"Authorization": f"Bearer {READER}"}
    )
    assert batch.status_code == 403


async def test_admin_key_may_write(client: httpx.AsyncClient) -> None:
    response = await post(client, event(), Authorization=f"Bearer {ADMIN}")
    assert response.status_code == 202


async def test_broker_unavailable_is_503(client: httpx.AsyncClient, fake: FakePublisher) -> None:
    fake.fail_all = True
    response = await post(client, event())
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM
    assert int(response.headers["retry-after"]) > 0
    assert (await client.get("/readyz")).status_code == 503
    assert await metric(
        client, 'tierflow_ingest_responses_total{route="/v1/events",status="5xx"}') == 1


async def test_health_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"broker": True}
    await post(client, event())
    await post(client, event(data={"amount": "1", "currency": "USD"}))
    text = (await client.get("/metrics")).text
    assert 'tierflow_ingest_events_total{outcome="accepted",type="purchase"}' in text
    assert 'tierflow_ingest_rejections_total{reason="currency",type="purchase"} 1.0' in text
    assert 'tierflow_ingest_request_seconds_count{route="/v1/events"}' in text
    assert 'tierflow_ingest_responses_total{route="/v1/events",status="2xx"} 1.0' in text
    assert 'tierflow_ingest_responses_total{route="/v1/events",status="4xx"} 1.0' in text
    assert WRITER not in text


async def test_batch_json_mixes_accepted_and_rejected(
    client: httpx.AsyncClient, fake: FakePublisher
) -> None:
    good, bad = event(), event(data={"amount": "0", "currency": "CNY"})
    response = await client.post("/v1/events/batch", json={"events": [good, bad, 7]}, headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 2)
    assert "unavailable" not in body
    first, second, third = body["results"]
    assert first == {"index": 0, "event_id": good["event_id"], "status": "accepted", "errors": []}
    assert second["status"] == "rejected"
    assert second["event_id"] == bad["event_id"]
    assert second["errors"][0]["field"] == "data.amount"
    assert third["event_id"] is None
    assert [e.event_id for e in fake.published] == [good["event_id"]]


async def test_batch_ndjson(client: httpx.AsyncClient, fake: FakePublisher) -> None:
    docs = [event(), event(), event(type="interaction", data={"channel": "web", "action": "visit"})]
    lines = b"\n".join(orjson.dumps(d) for d in docs) + b"\n{broken\n\n"
    response = await client.post(
        "/v1/events/batch", content=lines,
        headers={**AUTH, "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (3, 1)
    assert body["results"][3]["status"] == "rejected"
    assert [e.event_id for e in fake.published] == [d["event_id"] for d in docs]
    assert await metric(
        client, 'tierflow_ingest_rejections_total{reason="malformed",type="unknown"}') >= 1
    # A batch refused as a whole: no event was read, the type is `request`.
    response = await client.post("/v1/events/batch", content=b"{not json",
                                 headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert await metric(
        client, 'tierflow_ingest_rejections_total{reason="malformed",type="request"}') >= 1


async def test_batch_over_limit_is_413(client: httpx.AsyncClient, fake: FakePublisher) -> None:
    response = await client.post(
        "/v1/events/batch", json={"events": [event() for _ in range(6)]}, headers=AUTH
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert fake.published == []


@pytest.mark.parametrize(
    ("body", "status"), [(b'{"events": [', 400), (b"[]", 422), (b'{"events": {}}', 422)]
)
async def test_batch_bad_envelope(client: httpx.AsyncClient, body: bytes, status: int) -> None:
    response = await client.post(
        "/v1/events/batch", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM


async def test_batch_wrong_media_type_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/events/batch", content=b"{}", headers={**AUTH, "Content-Type": "text/csv"}
    )
    assert response.status_code == 415


async def test_batch_empty_is_fine(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events/batch", json={"events": []}, headers=AUTH)
    assert response.json() == {"accepted": 0, "rejected": 0, "results": []}


async def test_batch_partly_unacknowledged(client: httpx.AsyncClient, fake: FakePublisher) -> None:
    docs = [event(), event()]
    fake.fail.add(docs[1]["event_id"])
    response = await client.post("/v1/events/batch", json={"events": docs}, headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["rejected"], body["unavailable"]) == (1, 0, 1)
    assert body["results"][1]["status"] == "unavailable"
    assert body["results"][1]["errors"]


async def test_batch_broker_down_is_503(client: httpx.AsyncClient, fake: FakePublisher) -> None:
    fake.fail_all = True
    response = await client.post(
        "/v1/events/batch", json={"events": [event(), {"bad": 1}]}, headers=AUTH
    )
    assert response.status_code == 503
    assert "retry-after" in response.headers


async def test_batch_all_rejected_is_200_not_503(
    client: httpx.AsyncClient, fake: FakePublisher
) -> None:
    fake.fail_all = True
    response = await client.post("/v1/events/batch", json={"events": [{"bad": 1}]}, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["rejected"] == 1


async def test_batch_future_event_rejected(client: httpx.AsyncClient) -> None:
    late = (datetime.now(UTC) + timedelta(minutes=6)).isoformat()
    response = await client.post(
        "/v1/events/batch", json={"events": [event(occurred_at=late)]}, headers=AUTH
    )
    assert response.json()["results"][0]["errors"][0]["field"] == "occurred_at"


def with_number_amount(doc: dict[str, Any], literal: bytes) -> bytes:
    """The event as JSON, its amount the JSON number `literal` written verbatim."""
    return orjson.dumps(doc).replace(b'"amount":"1299.00"', b'"amount":' + literal)


async def test_amounts_and_instants_at_the_edges(
    client: httpx.AsyncClient, fake: FakePublisher
) -> None:
    # A binary float would read the second amount as 100.0 and accept it.
    lines = [with_number_amount(event(), b"1299.990"),
             with_number_amount(event(), b"100.000000000000001"),
             orjson.dumps(event(occurred_at="0001-01-01T00:00:00Z"))]
    for content_type, content in [
        ("application/json", b'{"events": [' + b",".join(lines) + b"]}"),
        ("application/x-ndjson", b"\n".join(lines)),
    ]:
        fake.published.clear()
        response = await client.post("/v1/events/batch", content=content,
                                     headers={**AUTH, "Content-Type": content_type})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["status"] for r in results] == ["accepted", "rejected", "rejected"]
        assert results[1]["errors"] == [
            {"field": "data.amount", "reason": "at most 4 decimal places"}]
        assert results[2]["errors"] == [
            {"field": "occurred_at", "reason": "must be on or after 2000-01-01T00:00:00Z"}]
        [published] = fake.published
        assert str(published.data.amount) == "1299.990"  # type: ignore[union-attr]
    single = await client.post("/v1/events", content=lines[1],
                               headers={**AUTH, "Content-Type": "application/json"})
    assert single.status_code == 422
    assert single.json()["errors"] == [
        {"field": "data.amount", "reason": "at most 4 decimal places"}]


async def test_nan_in_a_json_batch_is_not_json(client: httpx.AsyncClient) -> None:
    body = orjson.dumps({"events": [event(), event()]}).replace(
        b'"amount":"1299.00"', b'"amount":NaN', 1)
    response = await client.post(
        "/v1/events/batch", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 400
