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
    WINDOWS,
    Aggregates,
    average_units,
    from_units,
    window_sums,
)

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


def compute_metrics(
    agg: Aggregates, today: date, names: Iterable[str] | None = None
) -> Metrics:
    """Metrics of one customer as of `today` (UTC): all of them, in the order of
    METRIC_NAMES, or only `names` (known metrics), in their order. O(1) when the
    aggregates were advanced to `today`; otherwise the sums are recomputed."""
    day = today.toordinal()
    sums = agg.sums if agg.as_of == day else window_sums(agg.days, day)
    return {name: metric_at(name, agg, day, sums)
            for name in (METRIC_NAMES if names is None else names)}


def in_order(names: Iterable[str]) -> tuple[str, ...]:
    """`names` in the order of METRIC_NAMES, unknown ones left out."""
    wanted = set(names)
    return tuple(name for name in METRIC_NAMES if name in wanted)


def metric_at(name: str, agg: Aggregates, today: int, sums: list[list[int]]) -> Value:
    """One metric as of the day `today` (an ordinal), with the window sums of that day."""
    simple = _SIMPLE.get(name)
    if simple is not None:
        return simple(agg, today)
    return _WINDOWED[name](sums)


def _money(units: int) -> Decimal:
    return from_units(max(units, 0))


def _average(sums: list[list[int]]) -> Value:
    year = sums[-1]
    units = average_units(year[NET], year[ORDERS])
    return None if units is None else Decimal(units).scaleb(-4)


def _windowed() -> dict[str, Callable[[list[list[int]]], Value]]:
    getters: dict[str, Callable[[list[list[int]]], Value]] = {}
    for i, n in enumerate(WINDOWS):
        getters[f"spend_{n}d"] = lambda s, i=i: _money(s[i][NET])  # type: ignore[misc]
        getters[f"orders_{n}d"] = lambda s, i=i: s[i][ORDERS]  # type: ignore[misc]
        getters[f"interactions_{n}d"] = lambda s, i=i: s[i][INTERACTIONS]  # type: ignore[misc]
    year, quarter = len(WINDOWS) - 1, WINDOWS.index(90)
    getters["avg_order_value_365d"] = _average
    getters["referrals_365d"] = lambda s: s[year][REFERRALS]
    getters["complaints_365d"] = lambda s: s[year][COMPLAINTS]
    getters["complaints_90d"] = lambda s: s[quarter][COMPLAINTS]
    return getters


_WINDOWED = _windowed()


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
