"""Per-customer aggregates as a pure fold: `apply(aggregates, event)`, order-independent.

All-time figures are totals, mins and maxes; windowed figures come from per-UTC-day
buckets, kept for the longest window (365 days) and pruned once no window can see them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.events import Event, Feedback, Interaction, Purchase, Refund

LONGEST_WINDOW = 365
ZERO = Decimal(0)


@dataclass
class DayBucket:
    """What happened on one UTC date."""

    net_spend: Decimal = ZERO
    orders: int = 0
    interactions: int = 0
    referrals: int = 0
    complaints: int = 0


@dataclass
class Aggregates:
    """Everything the metrics of one customer are computed from."""

    purchases_total: Decimal = ZERO
    refunds_total: Decimal = ZERO
    orders_total: int = 0
    first_purchase: date | None = None
    last_purchase: date | None = None
    categories: set[str] = field(default_factory=set)
    interactions_total: int = 0
    referrals_total: int = 0
    complaints_total: int = 0
    last_interaction: date | None = None
    last_activity: date | None = None
    rating_sum: int = 0
    ratings_count: int = 0
    # The latest NPS answer by (occurred_at, event_id): a total order, so order-independent.
    last_nps: int | None = None
    last_nps_key: tuple[datetime, str] | None = None
    days: dict[date, DayBucket] = field(default_factory=dict)


def utc_date(moment: datetime) -> date:
    """The UTC calendar date of an aware datetime."""
    return moment.astimezone(UTC).date()


def _min(old: date | None, new: date) -> date:
    return new if old is None or new < old else old


def _max(old: date | None, new: date) -> date:
    return new if old is None or new > old else old


def apply(agg: Aggregates, event: Event) -> Aggregates:
    """Fold one event into the aggregates (mutating and returning them)."""
    day = utc_date(event.occurred_at)
    bucket = agg.days.get(day)
    if bucket is None:
        bucket = agg.days[day] = DayBucket()
    agg.last_activity = _max(agg.last_activity, day)
    if isinstance(event, Purchase):
        agg.purchases_total += event.data.amount
        agg.orders_total += 1
        bucket.net_spend += event.data.amount
        bucket.orders += 1
        agg.first_purchase = _min(agg.first_purchase, day)
        agg.last_purchase = _max(agg.last_purchase, day)
        if event.data.category:
            agg.categories.add(event.data.category)
    elif isinstance(event, Refund):
        agg.refunds_total += event.data.amount
        bucket.net_spend -= event.data.amount
    elif isinstance(event, Interaction):
        agg.interactions_total += 1
        bucket.interactions += 1
        agg.last_interaction = _max(agg.last_interaction, day)
        if event.data.action == "referral":
            agg.referrals_total += 1
            bucket.referrals += 1
    elif isinstance(event, Feedback):
        _apply_feedback(agg, event, bucket)
    return agg


def _apply_feedback(agg: Aggregates, event: Feedback, bucket: DayBucket) -> None:
    data = event.data
    if data.complaint:
        agg.complaints_total += 1
        bucket.complaints += 1
    if data.rating is not None:
        agg.rating_sum += data.rating
        agg.ratings_count += 1
    if data.nps is not None:
        key = (event.occurred_at.astimezone(UTC), event.event_id)
        if agg.last_nps_key is None or key > agg.last_nps_key:
            agg.last_nps_key = key
            agg.last_nps = data.nps


def dedupe(events: Iterable[Event]) -> list[Event]:
    """The events in order, without repeats of an `event_id` (the first occurrence wins)."""
    first: dict[str, Event] = {}
    for event in events:
        first.setdefault(event.event_id, event)
    return list(first.values())


def prune(agg: Aggregates, today: date) -> Aggregates:
    """Drop day buckets no window can reach again (today only moves forward)."""
    oldest = today - timedelta(days=LONGEST_WINDOW - 1)
    stale = [day for day in agg.days if day < oldest]
    for day in stale:
        del agg.days[day]
    return agg


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def _day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def to_json(agg: Aggregates) -> dict[str, Any]:
    """A JSON-safe document (money as strings) for the `customers.aggregates` column."""
    return {
        "p": str(agg.purchases_total), "r": str(agg.refunds_total), "o": agg.orders_total,
        "fp": _iso(agg.first_purchase), "lp": _iso(agg.last_purchase),
        "cat": sorted(agg.categories), "i": agg.interactions_total, "ref": agg.referrals_total,
        "c": agg.complaints_total, "li": _iso(agg.last_interaction), "la": _iso(agg.last_activity),
        "rs": agg.rating_sum, "rc": agg.ratings_count, "nps": agg.last_nps,
        "npsk": [agg.last_nps_key[0].isoformat(), agg.last_nps_key[1]]
        if agg.last_nps_key else None,
        "d": {
            day.isoformat(): [str(b.net_spend), b.orders, b.interactions, b.referrals, b.complaints]
            for day, b in agg.days.items()
        },
    }


def from_json(doc: dict[str, Any]) -> Aggregates:
    """The inverse of `to_json`."""
    key = doc.get("npsk")
    return Aggregates(
        purchases_total=Decimal(doc["p"]), refunds_total=Decimal(doc["r"]),
        orders_total=doc["o"], first_purchase=_day(doc["fp"]), last_purchase=_day(doc["lp"]),
        categories=set(doc["cat"]), interactions_total=doc["i"], referrals_total=doc["ref"],
        complaints_total=doc["c"], last_interaction=_day(doc["li"]),
        last_activity=_day(doc["la"]), rating_sum=doc["rs"], ratings_count=doc["rc"],
        last_nps=doc["nps"],
        last_nps_key=(datetime.fromisoformat(key[0]), key[1]) if key else None,
        days={
            date.fromisoformat(day): DayBucket(Decimal(v[0]), v[1], v[2], v[3], v[4])
            for day, v in doc["d"].items()
        },
    )

