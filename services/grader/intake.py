"""Checking each consumed message by the same rules ingest applies (pure)."""

from __future__ import annotations

from aiokafka import ConsumerRecord
from pydantic import ValidationError

from shared.events import Event, parse_event

# Why a record went to the DLQ, as the `reason` label of tierflow_grader_dlq_total (the
# header `tierflow-error` on the DLQ record says it in words).
DLQ_REASONS = ("empty", "invalid", "future", "currency", "control", "unreadable", "fold")


def validate(
    record: ConsumerRecord, *, currency: str, max_future_s: float
) -> tuple[Event | None, str, str]:
    """The event, or None, why the message is unusable in words and as one of
    DLQ_REASONS (it goes to the DLQ)."""
    if record.value is None:
        return None, "empty message value", "empty"
    try:
        event = parse_event(record.value)
    except ValidationError as exc:
        return None, summary(exc), "invalid"
    # "Too far in the future" is judged against the message's own time, so a replay
    # months later gives the same answer. Plain epoch seconds: no datetimes per record.
    if event.occurred_at.timestamp() > record.timestamp / 1000 + max_future_s:
        return None, "occurred_at: more than the allowed skew ahead of the message time", \
            "future"
    if event.type in ("purchase", "refund") and event.data.currency != currency:
        return None, (f"data.currency: must be the base currency {currency} "
                      "(TIERFLOW_BASE_CURRENCY)"), "currency"
    return event, "", ""


def summary(exc: ValidationError) -> str:
    """The first few problems, one line, for the DLQ header."""
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
