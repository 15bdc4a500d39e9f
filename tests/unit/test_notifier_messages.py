"""The pure part of the relay: records, what filters read, backoff, latency."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson

from services.notifier.messages import (
    BACKOFF_CAP_S,
    MESSAGE_ID_HEADER,
    TYPE_HEADER,
    OutboxRow,
    backoff_delay,
    change_of,
    relay_seconds,
    to_record,
)

CREATED = datetime(2026, 11, 20, 2, 15, 1, tzinfo=UTC)


def row(**changes: object) -> OutboxRow:
    message_id = uuid.UUID("0d9c3f2e-7a4b-4c1d-9e8f-0123456789ab")
    payload = {
        "id": str(message_id), "type": "tier.changed", "schema_version": 1,
        "customer_id": "c-1042", "ladder": "tier", "sequence": 3,
        "from_tier": "regular", "to_tier": "vip", "direction": "up",
        "metrics": {"spend_365d": "51200.00", "orders_365d": 13},
        "label": "VIP客户",
    }
    fields: dict[str, object] = {
        "id": 7, "message_id": message_id, "customer_id": "c-1042", "ladder": "tier",
        "sequence": 3, "kind": "tier.changed", "payload": orjson.dumps(payload).decode(),
        "created_at": CREATED,
    }
    fields.update(changes)
    return OutboxRow(**fields)  # type: ignore[arg-type]


def test_record_is_keyed_by_customer_with_id_and_type_headers() -> None:
    record = to_record(row(customer_id="c-ü@x", kind="tier.downgrade_scheduled"))
    assert record.key == "c-ü@x".encode()
    assert record.headers == [
        (MESSAGE_ID_HEADER, b"0d9c3f2e-7a4b-4c1d-9e8f-0123456789ab"),
        (TYPE_HEADER, b"tier.downgrade_scheduled"),
    ]


def test_record_value_is_the_stored_message_unchanged() -> None:
    source = row()
    assert to_record(source).value == source.payload.encode()
    assert orjson.loads(to_record(source).value)["label"] == "VIP客户"


def test_numbers_keep_every_digit() -> None:
    # As jsonb renders them: a float round trip would turn these into 1.2345678901234568e+29
    # and 51200.1.
    payload = '{"id": "x", "big": 123456789012345678901234567890, "amount": 51200.10}'
    assert to_record(row(payload=payload)).value == payload.encode()


def test_change_of_reads_what_filters_need() -> None:
    change = change_of(row())
    assert (change.id, change.customer_id, change.kind, change.ladder) == (
        7, "c-1042", "tier.changed", "tier")
    assert (change.to_tier, change.direction) == ("vip", "up")


def test_backoff_grows_exponentially_and_is_capped() -> None:
    delays = [backoff_delay(n) for n in range(12)]
    assert delays[0] == 0.0
    assert delays[1:4] == [0.1, 0.2, 0.4]
    assert delays == sorted(delays)
    assert max(delays) == BACKOFF_CAP_S
    assert backoff_delay(10_000) == BACKOFF_CAP_S


def test_relay_seconds_is_the_delay_and_never_negative() -> None:
    assert relay_seconds(CREATED, CREATED + timedelta(milliseconds=250)) == 0.25
    assert relay_seconds(CREATED, CREATED - timedelta(seconds=1)) == 0.0
