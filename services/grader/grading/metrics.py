"""The metrics of the contract, computed from aggregates for a given UTC date."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from decimal import Decimal

from services.grader.grading.aggregates import (
    COMPLAINTS,
    INTERACTIONS,
    NET,
    ORDERS,
    REFERRALS,
    Aggregates,
    from_units,
)

WINDOWS = (7, 30, 90, 180, 365)
FOUR_PLACES = Decimal("0.0001")

Value = int | Decimal | None
Metrics = dict[str, Value]

METRIC_NAMES: tuple[str, ...] = (
    "spend_total", *(f"spend_{n}d" for n in WINDOWS),
    "orders_total", *(f"orders_{n}d" for n in WINDOWS),
    "avg_order_value_365d", "days_since_first_purchase", "days_since_last_purchase",
    "distinct_categories",
    "interactions_total", *(f"interactions_{n}d" for n in WINDOWS),
    "days_since_last_interaction", "days_since_last_activity",
    "referrals_total", "referrals_365d",
    "complaints_total", "complaints_90d", "complaints_365d",
    "avg_rating", "ratings_count", "last_nps",
)

def _days_since(day: int | None, today: int) -> int | None:
    # An event up to 5 minutes ahead can fall on tomorrow's date: never report negative days.
    return None if day is None else max(today - day, 0)


def _window_sums(agg: Aggregates, today: int) -> list[list[int]]:
    """Per window (WINDOWS order): [net spend, orders, interactions]; plus the 365/90-day
    referral and complaint counts appended as a sixth row [referrals, complaints_365,
    complaints_90]."""
    sums = [[0, 0, 0] for _ in WINDOWS]
    referrals = complaints_365 = complaints_90 = 0
    for day, bucket in agg.days.items():
        age = today - day
        if age < 0 or age >= 365:
            continue
        for index, n in enumerate(WINDOWS):
            if age < n:
                row = sums[index]
                row[0] += bucket[NET]
                row[1] += bucket[ORDERS]
                row[2] += bucket[INTERACTIONS]
        referrals += bucket[REFERRALS]
        complaints_365 += bucket[COMPLAINTS]
        if age < 90:
            complaints_90 += bucket[COMPLAINTS]
    sums.append([referrals, complaints_365, complaints_90])
    return sums


def compute_metrics(
    agg: Aggregates, today: date, names: Iterable[str] | None = None
) -> Metrics:
    """Metrics of one customer as of `today` (UTC): all of them, or only `names`."""
    day = today.toordinal()
    wanted = set(METRIC_NAMES if names is None else names)
    windowed = any(n.endswith("d") and not n.startswith("days") for n in wanted)
    sums = _window_sums(agg, day) if windowed else None
    out: Metrics = {}
    for name in METRIC_NAMES:
        if name in wanted:
            out[name] = _metric(name, agg, day, sums)
    return out


def _metric(name: str, agg: Aggregates, today: int, sums: list[list[int]] | None) -> Value:
    simple = _SIMPLE.get(name)
    if simple is not None:
        return simple(agg, today)
    assert sums is not None  # noqa: S101 - every windowed name ends in "d"
    if name == "avg_order_value_365d":
        orders = sums[4][1]
        spend = from_units(max(sums[4][0], 0))
        return (spend / orders).quantize(FOUR_PLACES) if orders else None
    if name == "referrals_365d":
        return sums[5][0]
    if name == "complaints_365d":
        return sums[5][1]
    if name == "complaints_90d":
        return sums[5][2]
    kind, _, days = name.rpartition("_")
    row = sums[WINDOWS.index(int(days[:-1]))]
    if kind == "spend":
        return from_units(max(row[0], 0))
    return row[1] if kind == "orders" else row[2]


_SIMPLE: dict[str, Callable[[Aggregates, int], Value]] = {
    "spend_total": lambda a, t: from_units(max(a.purchases_total - a.refunds_total, 0)),
    "orders_total": lambda a, t: a.orders_total,
    "days_since_first_purchase": lambda a, t: _days_since(a.first_purchase, t),
    "days_since_last_purchase": lambda a, t: _days_since(a.last_purchase, t),
    "distinct_categories": lambda a, t: len(a.categories),
    "interactions_total": lambda a, t: a.interactions_total,
    "days_since_last_interaction": lambda a, t: _days_since(a.last_interaction, t),
    "days_since_last_activity": lambda a, t: _days_since(a.last_activity, t),
    "referrals_total": lambda a, t: a.referrals_total,
    "complaints_total": lambda a, t: a.complaints_total,
    "avg_rating": lambda a, t: (
        (Decimal(a.rating_sum) / a.ratings_count).quantize(FOUR_PLACES)
        if a.ratings_count else None
    ),
    "ratings_count": lambda a, t: a.ratings_count,
    "last_nps": lambda a, t: a.last_nps,
}


def metrics_json(metrics: Metrics, names: Iterable[str] | None = None) -> dict[str, object]:
    """JSON-safe metrics: money as decimal strings, counts as integers."""
    keys = tuple(metrics) if names is None else names
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in ((k, metrics[k]) for k in keys)}
