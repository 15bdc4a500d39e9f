"""The metrics of the contract, computed from aggregates for a given UTC date."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from services.grader.grading.aggregates import Aggregates

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
MONEY_METRICS = frozenset(
    {"spend_total", *(f"spend_{n}d" for n in WINDOWS), "avg_order_value_365d"}
)


def _days_since(day: date | None, today: date) -> int | None:
    # An event up to 5 minutes ahead can fall on tomorrow's date: never report negative days.
    return None if day is None else max((today - day).days, 0)


def compute_metrics(agg: Aggregates, today: date) -> Metrics:
    """Every metric of one customer as of `today` (UTC)."""
    spend = dict.fromkeys(WINDOWS, Decimal(0))
    orders = dict.fromkeys(WINDOWS, 0)
    interactions = dict.fromkeys(WINDOWS, 0)
    referrals_365 = complaints_90 = complaints_365 = 0
    for day, bucket in agg.days.items():
        age = (today - day).days
        if age < 0 or age >= 365:
            continue
        for n in WINDOWS:
            if age < n:
                spend[n] += bucket.net_spend
                orders[n] += bucket.orders
                interactions[n] += bucket.interactions
        referrals_365 += bucket.referrals
        complaints_365 += bucket.complaints
        if age < 90:
            complaints_90 += bucket.complaints
    out: Metrics = {"spend_total": max(agg.purchases_total - agg.refunds_total, Decimal(0))}
    out.update({f"spend_{n}d": max(spend[n], Decimal(0)) for n in WINDOWS})
    out["orders_total"] = agg.orders_total
    out.update({f"orders_{n}d": orders[n] for n in WINDOWS})
    spend_365, orders_365 = out["spend_365d"], orders[365]
    assert isinstance(spend_365, Decimal)  # noqa: S101 - for the type checker
    out["avg_order_value_365d"] = (
        (spend_365 / orders_365).quantize(FOUR_PLACES) if orders_365 else None
    )
    out["days_since_first_purchase"] = _days_since(agg.first_purchase, today)
    out["days_since_last_purchase"] = _days_since(agg.last_purchase, today)
    out["distinct_categories"] = len(agg.categories)
    out["interactions_total"] = agg.interactions_total
    out.update({f"interactions_{n}d": interactions[n] for n in WINDOWS})
    out["days_since_last_interaction"] = _days_since(agg.last_interaction, today)
    out["days_since_last_activity"] = _days_since(agg.last_activity, today)
    out["referrals_total"] = agg.referrals_total
    out["referrals_365d"] = referrals_365
    out["complaints_total"] = agg.complaints_total
    out["complaints_90d"] = complaints_90
    out["complaints_365d"] = complaints_365
    out["avg_rating"] = (
        (Decimal(agg.rating_sum) / agg.ratings_count).quantize(FOUR_PLACES)
        if agg.ratings_count else None
    )
    out["ratings_count"] = agg.ratings_count
    out["last_nps"] = agg.last_nps
    return out


def metrics_json(metrics: Metrics, names: tuple[str, ...] | None = None) -> dict[str, object]:
    """JSON-safe metrics: money as decimal strings, counts as integers."""
    keys = names if names is not None else tuple(metrics)
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in ((k, metrics[k]) for k in keys)}
