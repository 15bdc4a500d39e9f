"""Per-customer aggregates as a pure fold: `apply(aggregates, event)`, order-independent.

All-time figures are totals, mins and maxes; windowed figures come from per-UTC-day
buckets, kept for the longest window (365 days) and pruned once no window can see them.
Money is kept as integer ten-thousandths (amounts have at most 4 decimal places, so this
is exact) and days as proleptic ordinals: both are plain ints, fast to add and compare.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.events import Event

LONGEST_WINDOW = 365
SCALE = 10_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_DAY = date(1970, 1, 1).toordinal()
ONE_DAY = timedelta(days=1)
ONE_MICROSECOND = timedelta(microseconds=1)

# A day bucket: [net spend (1/10000), orders, interactions, referrals, complaints].
NET, ORDERS, INTERACTIONS, REFERRALS, COMPLAINTS = range(5)


@dataclass
class Aggregates:
    """Everything the metrics of one customer are computed from."""

    purchases_total: int = 0
    refunds_total: int = 0
    orders_total: int = 0
    first_purchase: int | None = None
    last_purchase: int | None = None
    categories: set[str] = field(default_factory=set)
    interactions_total: int = 0
    referrals_total: int = 0
    complaints_total: int = 0
    last_interaction: int | None = None
    last_activity: int | None = None
    rating_sum: int = 0
    ratings_count: int = 0
    # The latest NPS answer by (UTC microseconds, event_id): a total order, so the result
    # does not depend on the order events arrive in.
    last_nps: int | None = None
    last_nps_key: tuple[int, str] | None = None
    days: dict[int, list[int]] = field(default_factory=dict)


def to_units(amount: Decimal) -> int:
    """An amount in ten-thousandths (exact: amounts have at most 4 decimal places)."""
    return int(amount.scaleb(4))


def from_units(units: int) -> Decimal:
    """Ten-thousandths back to a decimal amount: two places, or four when it has them."""
    if units % 100 == 0:
        return Decimal(units // 100).scaleb(-2)
    return Decimal(units).scaleb(-4)


def day_number(moment: datetime) -> int:
    """The ordinal of the UTC calendar date of an aware datetime."""
    return EPOCH_DAY + (moment - EPOCH) // ONE_DAY


def utc_date(moment: datetime) -> date:
    """The UTC calendar date of an aware datetime."""
    return date.fromordinal(day_number(moment))


def apply(agg: Aggregates, event: Event) -> Aggregates:
    """Fold one event into the aggregates (mutating and returning them)."""
    day = day_number(event.occurred_at)
    bucket = agg.days.get(day)
    if bucket is None:
        bucket = agg.days[day] = [0, 0, 0, 0, 0]
    if agg.last_activity is None or day > agg.last_activity:
        agg.last_activity = day
    kind = event.type
    if kind == "purchase":
        units = to_units(event.data.amount)  # type: ignore[union-attr]
        agg.purchases_total += units
        agg.orders_total += 1
        bucket[NET] += units
        bucket[ORDERS] += 1
        if agg.first_purchase is None or day < agg.first_purchase:
            agg.first_purchase = day
        if agg.last_purchase is None or day > agg.last_purchase:
            agg.last_purchase = day
        category = event.data.category  # type: ignore[union-attr]
        if category:
            agg.categories.add(category)
    elif kind == "refund":
        units = to_units(event.data.amount)  # type: ignore[union-attr]
        agg.refunds_total += units
        bucket[NET] -= units
    elif kind == "interaction":
        agg.interactions_total += 1
        bucket[INTERACTIONS] += 1
        if agg.last_interaction is None or day > agg.last_interaction:
            agg.last_interaction = day
        if event.data.action == "referral":  # type: ignore[union-attr]
            agg.referrals_total += 1
            bucket[REFERRALS] += 1
    else:
        _apply_feedback(agg, event, bucket)
    return agg


def _apply_feedback(agg: Aggregates, event: Event, bucket: list[int]) -> None:
    data = event.data
    if data.complaint:  # type: ignore[union-attr]
        agg.complaints_total += 1
        bucket[COMPLAINTS] += 1
    rating = data.rating  # type: ignore[union-attr]
    if rating is not None:
        agg.rating_sum += rating
        agg.ratings_count += 1
    nps = data.nps  # type: ignore[union-attr]
    if nps is not None:
        key = ((event.occurred_at - EPOCH) // ONE_MICROSECOND, event.event_id)
        if agg.last_nps_key is None or key > agg.last_nps_key:
            agg.last_nps_key = key
            agg.last_nps = nps


def dedupe(events: Iterable[Event]) -> list[Event]:
    """The events in order, without repeats of an `event_id` (the first occurrence wins)."""
    first: dict[str, Event] = {}
    for event in events:
        first.setdefault(event.event_id, event)
    return list(first.values())


def prune(agg: Aggregates, today: date) -> Aggregates:
    """Drop day buckets no window can reach again (today only moves forward)."""
    oldest = today.toordinal() - (LONGEST_WINDOW - 1)
    stale = [day for day in agg.days if day < oldest]
    for day in stale:
        del agg.days[day]
    return agg


def to_json(agg: Aggregates) -> dict[str, Any]:
    """A compact JSON document for the `customers.aggregates` column (all integers)."""
    return {
        "p": agg.purchases_total, "r": agg.refunds_total, "o": agg.orders_total,
        "fp": agg.first_purchase, "lp": agg.last_purchase, "cat": sorted(agg.categories),
        "i": agg.interactions_total, "ref": agg.referrals_total, "c": agg.complaints_total,
        "li": agg.last_interaction, "la": agg.last_activity, "rs": agg.rating_sum,
        "rc": agg.ratings_count, "nps": agg.last_nps,
        "npsk": list(agg.last_nps_key) if agg.last_nps_key else None,
        "d": [[day, *bucket] for day, bucket in sorted(agg.days.items())],
    }


def from_json(doc: dict[str, Any]) -> Aggregates:
    """The inverse of `to_json`."""
    key = doc["npsk"]
    return Aggregates(
        doc["p"], doc["r"], doc["o"], doc["fp"], doc["lp"], set(doc["cat"]), doc["i"],
        doc["ref"], doc["c"], doc["li"], doc["la"], doc["rs"], doc["rc"], doc["nps"],
        (key[0], key[1]) if key else None, {row[0]: row[1:] for row in doc["d"]},
    )
