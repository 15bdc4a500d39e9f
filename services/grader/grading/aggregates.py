"""Per-customer aggregates as a pure fold: `apply(aggregates, event)`, order-independent.

All-time figures are totals, mins and maxes. Windowed figures are running sums per window
(7 … 365 days) kept relative to a day `as_of`, over per-UTC-day buckets: `advance` slides
them to a new day by adding the days that enter a window and subtracting the days that
leave it, so grading costs the same for a customer with one event and one with a million.
Buckets older than the longest window are dropped: at most 366 exist (today, the year
before it, and a day of clock skew ahead).

Money is kept as integer ten-thousandths (amounts have at most 4 decimal places, so this
is exact) and days as proleptic ordinals: plain ints, fast to add and compare, and stored
as 64-bit integers. A money event that would take a total past 64 bits is refused with
`FoldError` (the grader dead-letters it) rather than stored inexactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import msgspec

from shared.errors import TierflowError
from shared.events import Event

WINDOWS = (7, 30, 90, 180, 365)
LONGEST_WINDOW = WINDOWS[-1]
SCALE = 10_000
INT64_MAX = 2**63 - 1
# distinct_categories is exact up to this many categories and stays at it past them.
CATEGORY_CAP = 100
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_DAY = date(1970, 1, 1).toordinal()
ONE_DAY = timedelta(days=1)
ONE_MICROSECOND = timedelta(microseconds=1)

# A day bucket and a window's running sum: [net spend (1/10000), orders, interactions,
# referrals, complaints].
NET, ORDERS, INTERACTIONS, REFERRALS, COMPLAINTS = range(5)
FIELDS = 5


class FoldError(TierflowError):
    """An event this customer's state cannot take (it goes to the DLQ with the reason)."""


def _zero_sums() -> list[list[int]]:
    return [[0] * FIELDS for _ in WINDOWS]


class Aggregates(msgspec.Struct, array_like=True, gc=False):
    """Everything the metrics of one customer are computed from. (Stored as an array in
    this field order by services/grader/repository.py; no reference cycles, so untracked
    by the garbage collector.)"""

    purchases_total: int = 0
    refunds_total: int = 0
    orders_total: int = 0
    first_purchase: int | None = None
    last_purchase: int | None = None
    categories: set[str] = msgspec.field(default_factory=set)
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
    days: dict[int, list[int]] = msgspec.field(default_factory=dict)
    # The day the running window sums are relative to (None: not computed yet).
    as_of: int | None = None
    sums: list[list[int]] = msgspec.field(default_factory=_zero_sums)


def to_units(amount: Decimal) -> int:
    """An amount in ten-thousandths (exact: amounts have at most 4 decimal places)."""
    return int(amount.scaleb(4))


def from_units(units: int) -> Decimal:
    """Ten-thousandths back to a decimal amount: two places, or four when it has them."""
    if units % 100 == 0:
        return Decimal(units // 100).scaleb(-2)
    return Decimal(units).scaleb(-4)


def average_units(net: int, orders: int) -> int | None:
    """The average order in units: the net (none below 0) over the orders, rounded half
    to even to a whole unit (four decimal places), exactly; None without an order."""
    if not orders:
        return None
    q, r = divmod(max(net, 0), orders)
    return q + 1 if 2 * r > orders or (2 * r == orders and q & 1) else q


def day_number(moment: datetime) -> int:
    """The ordinal of the UTC calendar date of an aware datetime."""
    return EPOCH_DAY + (moment - EPOCH) // ONE_DAY


def utc_date(moment: datetime) -> date:
    """The UTC calendar date of an aware datetime."""
    return date.fromordinal(day_number(moment))


def _add(agg: Aggregates, day: int, index: int, delta: int) -> None:
    """Count `delta` on `day` in its bucket and in every window that sees it now."""
    as_of = agg.as_of
    if as_of is not None and day <= as_of - LONGEST_WINDOW:
        return  # older than every window: only the all-time figures count it
    bucket = agg.days.get(day)
    if bucket is None:
        bucket = agg.days[day] = [0] * FIELDS
    bucket[index] += delta
    if as_of is None or day > as_of:
        return  # a day ahead of as_of enters the windows when `advance` reaches it
    age = as_of - day
    for window, sums in zip(WINDOWS, agg.sums, strict=True):
        if age < window:
            sums[index] += delta


def apply(agg: Aggregates, event: Event) -> Aggregates:
    """Fold one event into the aggregates (mutating and returning them); raises FoldError,
    before changing anything, for an event the state cannot take."""
    day = day_number(event.occurred_at)
    kind = event.type
    if kind == "purchase":
        units = to_units(event.data.amount)  # type: ignore[union-attr]
        if agg.purchases_total + units > INT64_MAX:
            raise FoldError("data.amount: the customer's purchase total would exceed "
                            "the supported range (about 9.2e14)")
        agg.purchases_total += units
        agg.orders_total += 1
        _add(agg, day, NET, units)
        _add(agg, day, ORDERS, 1)
        if agg.first_purchase is None or day < agg.first_purchase:
            agg.first_purchase = day
        if agg.last_purchase is None or day > agg.last_purchase:
            agg.last_purchase = day
        category = event.data.category  # type: ignore[union-attr]
        if category and len(agg.categories) < CATEGORY_CAP:
            agg.categories.add(category)
    elif kind == "refund":
        units = to_units(event.data.amount)  # type: ignore[union-attr]
        if agg.refunds_total + units > INT64_MAX:
            raise FoldError("data.amount: the customer's refund total would exceed "
                            "the supported range (about 9.2e14)")
        agg.refunds_total += units
        _add(agg, day, NET, -units)
    elif kind == "interaction":
        agg.interactions_total += 1
        _add(agg, day, INTERACTIONS, 1)
        if agg.last_interaction is None or day > agg.last_interaction:
            agg.last_interaction = day
        if event.data.action == "referral":  # type: ignore[union-attr]
            agg.referrals_total += 1
            _add(agg, day, REFERRALS, 1)
    else:
        _apply_feedback(agg, event, day)
    if agg.last_activity is None or day > agg.last_activity:
        agg.last_activity = day
    return agg


def _apply_feedback(agg: Aggregates, event: Event, day: int) -> None:
    data = event.data
    if data.complaint:  # type: ignore[union-attr]
        agg.complaints_total += 1
        _add(agg, day, COMPLAINTS, 1)
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


def window_sums(days: dict[int, list[int]], today: int) -> list[list[int]]:
    """The running sums as of `today`, recomputed from the buckets."""
    sums = _zero_sums()
    for day, bucket in days.items():
        age = today - day
        if age < 0 or age >= LONGEST_WINDOW:
            continue
        for window, row in zip(WINDOWS, sums, strict=True):
            if age < window:
                for i in range(FIELDS):
                    row[i] += bucket[i]
    return sums


def _shift(row: list[int], bucket: list[int] | None, sign: int) -> None:
    if bucket is not None:
        for i in range(FIELDS):
            row[i] += sign * bucket[i]


def advance(agg: Aggregates, today: int) -> Aggregates:
    """Slide the window sums to the day ordinal `today` and drop buckets no window can
    reach again; costs the days moved, not the length of the history."""
    start = agg.as_of
    if start == today:
        return agg
    days = agg.days
    if start is None or today < start or today - start >= LONGEST_WINDOW:
        agg.sums = window_sums(days, today)
        for day in [d for d in days if d <= today - LONGEST_WINDOW]:
            del days[day]
    else:
        for window, row in zip(WINDOWS, agg.sums, strict=True):
            for day in range(max(start, today - window) + 1, today + 1):  # entering
                _shift(row, days.get(day), 1)
            for day in range(start - window + 1, min(today - window, start) + 1):  # leaving
                _shift(row, days.get(day), -1)
        for day in range(start - LONGEST_WINDOW + 1, today - LONGEST_WINDOW + 1):
            days.pop(day, None)
    agg.as_of = today
    return agg


def dedupe(events: Iterable[Event]) -> list[Event]:
    """The events in order, without repeats of an `event_id` (the first occurrence wins)."""
    first: dict[str, Event] = {}
    for event in events:
        first.setdefault(event.event_id, event)
    return list(first.values())
