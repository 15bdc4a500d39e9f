"""When time alone can next move a customer (pure).

With no new event, a customer's grade can change only on a day when one of the policy's
leaves that reads a time-dependent metric changes its answer (a window dropping an old
day, or taking in a day that was ahead of the clock; a days-since count crossing its
threshold), or when a downgrade's grace period ends. `next_due` finds the first such day
after `today`; the owner re-grades the customer then, with `reason: schedule`, and not
before. Customers nothing can move are never re-graded by time at all.

Every such metric is an integer in its own units (money in ten-thousandths, as the
aggregates keep it; counts; days), so each leaf's threshold becomes an integer cut
(`Cuts`): `t <= v` is `ceil(t) <= v` for an integer v, exactly. From today's value,
`Cuts.band` gives the range of values on which every leaf answers as it does today; the
search walks each metric's own days (a window taking in or dropping a bucket it reads)
and stops where the value leaves the band: a subtraction and two comparisons a day.
A days-since count only grows, so its first threshold day after today is its flip.

A window sum's day is exact: at most a year of buckets, at a few tens of nanoseconds
each. The average (a division a day) is walked for at most `MAX_STEPS` of its days; when
none of them moves it out of its band, the last one is returned: a re-grade that day
finds nothing to do and looks further. So the day returned is never later than the real
one, and a customer with a year of daily activity costs a bounded search per grading.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from math import inf

from services.grader.grading.aggregates import (
    COMPLAINTS,
    FIELDS,
    INTERACTIONS,
    NET,
    ORDERS,
    REFERRALS,
    SCALE,
    WINDOWS,
    Aggregates,
    average_units,
    window_sums,
)
from services.grader.grading.conditions import Condition, Leaf, leaves

# How far the search of a metric that moves both ways looks (days on which it changes,
# not calendar days) before settling for a re-grade on the last day it looked at.
MAX_STEPS = 48
LAST_DAY = date.max.toordinal()

_YEAR = len(WINDOWS) - 1
_KINDS = {"spend": (NET, SCALE), "orders": (ORDERS, 1), "interactions": (INTERACTIONS, 1)}
# Window sums: metric -> (index into WINDOWS, bucket field, units per 1 of the metric).
# Money is never negative (a refund-heavy window shows 0).
SUMS: dict[str, tuple[int, int, int]] = {
    **{f"{kind}_{n}d": (i, f, scale) for i, n in enumerate(WINDOWS)
       for kind, (f, scale) in _KINDS.items()},
    "referrals_365d": (_YEAR, REFERRALS, 1),
    "complaints_365d": (_YEAR, COMPLAINTS, 1),
    "complaints_90d": (WINDOWS.index(90), COMPLAINTS, 1),
}
AVERAGE = "avg_order_value_365d"  # the year's net spend over its orders, in units
DAYS_SINCE: dict[str, str] = {
    "days_since_first_purchase": "first_purchase",
    "days_since_last_purchase": "last_purchase",
    "days_since_last_interaction": "last_interaction",
    "days_since_last_activity": "last_activity",
}


def _integral(value: Decimal, rounding: str) -> int:
    return int(value.to_integral_value(rounding=rounding))


@dataclass(frozen=True, slots=True)
class Cuts:
    """The thresholds of every leaf on one metric as integer cuts in the metric's units.

    For an integer value v: `>=` and `<` ask whether t <= v, that is ceil(t) <= v
    (`right`); `>` and `<=` whether t < v, floor(t) < v (`left`); `==` and `!=` whether
    v == t, possible only for an integral t (`equal`). A null value is false for every
    op."""

    right: tuple[int, ...]
    left: tuple[int, ...]
    equal: tuple[int, ...]

    @classmethod
    def of(cls, leaves: Iterable[Leaf], scale: int) -> Cuts:
        """From the leaves of one metric whose values are integers of 1/`scale`."""
        right, left, equal = set(), set(), set()
        for leaf in leaves:
            t = Decimal(leaf.value).scaleb(4) if scale == SCALE else Decimal(leaf.value)
            if leaf.op in (">=", "<"):
                right.add(_integral(t, ROUND_CEILING))
            elif leaf.op in (">", "<="):
                left.add(_integral(t, ROUND_FLOOR))
            elif t == t.to_integral_value():
                equal.add(int(t))
        return cls(tuple(sorted(right)), tuple(sorted(left)), tuple(sorted(equal)))

    def band(self, value: int) -> tuple[float, float]:
        """The values [lo, hi] for which every leaf answers as it does for `value`."""
        lo, hi = -inf, inf
        right, left, equal = self.right, self.left, self.equal
        if right:
            k = bisect_right(right, value)  # right[:k] <= value < right[k:]
            if k:
                lo = right[k - 1]
            if k < len(right):
                hi = right[k] - 1
        if left:
            k = bisect_left(left, value)  # left[:k] < value <= left[k:]
            if k:
                lo = max(lo, left[k - 1] + 1)
            if k < len(left):
                hi = min(hi, left[k])
        if equal:
            k = bisect_left(equal, value)
            if k < len(equal) and equal[k] == value:
                return value, value
            if k:
                lo = max(lo, equal[k - 1] + 1)
            if k < len(equal):
                hi = min(hi, equal[k] - 1)
        return lo, hi

    def crossings(self) -> tuple[int, ...]:
        """For a count that is 0 up to some day and grows by one a day after it: how many
        days after that day a leaf changes its answer, in order."""
        days = {c for c in self.right if c > 0} | {c + 1 for c in self.left if c >= 0}
        for e in self.equal:
            days |= {e, e + 1} if e > 0 else {1} if e == 0 else set()
        return tuple(sorted(days))


@dataclass(frozen=True, slots=True)
class Timing:
    """What a policy's schedule looks at: the metrics of its leaves that time alone moves,
    on windows or on days-since counts, with their cuts."""

    windowed: dict[str, Cuts]
    counted: dict[str, Cuts]
    windows: tuple[tuple[int, int], ...]  # (index into WINDOWS, its length in days)
    # The search's plan: (window, field, money?, cuts) per window sum; the average's cuts;
    # (aggregate the count starts from, its crossings) per days-since count.
    sums: tuple[tuple[int, int, bool, Cuts], ...] = ()
    average: Cuts | None = None
    counts: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @classmethod
    def of(cls, conditions: Iterable[Condition]) -> Timing:
        """From every `when` and `stay_when` of a policy."""
        by_metric: dict[str, list[Leaf]] = {}
        for condition in conditions:
            for leaf in leaves(condition):
                if leaf.metric in SUMS or leaf.metric == AVERAGE or leaf.metric in DAYS_SINCE:
                    by_metric.setdefault(leaf.metric, []).append(leaf)
        windowed = {m: Cuts.of(found, SUMS[m][2] if m in SUMS else SCALE)
                    for m, found in by_metric.items() if m not in DAYS_SINCE}
        counted = {m: Cuts.of(found, 1) for m, found in by_metric.items() if m in DAYS_SINCE}
        windows = sorted({_YEAR if m == AVERAGE else SUMS[m][0] for m in windowed})
        return cls(
            windowed, counted, tuple((i, WINDOWS[i]) for i in windows),
            tuple((SUMS[m][0], SUMS[m][1], SUMS[m][2] == SCALE, c)
                  for m, c in windowed.items() if m != AVERAGE),
            windowed.get(AVERAGE),
            tuple((DAYS_SINCE[m], c.crossings()) for m, c in counted.items()))


def next_due(agg: Aggregates, timing: Timing, today: int,
             grace_ends: Iterable[int] = ()) -> int | None:
    """The first day after `today` (ordinals) on which a re-grade may give another answer
    with no new event: a leaf of `timing` flips, or one of `grace_ends` comes; None when
    nothing but an event can move the customer."""
    due = None
    for day in grace_ends:
        if day > today and (due is None or day < due):
            due = day
    flip = first_flip(agg, timing, today, before=due)  # earlier than `due`, or None
    return due if flip is None else flip


def first_flip(agg: Aggregates, timing: Timing, today: int, *,
               before: int | None = None) -> int | None:
    """The first day after `today`, and before `before`, on which a leaf of `timing`
    answers otherwise than it does today (or the last day a search looked at, see above);
    None when there is none."""
    best = before
    # A days-since count is max(day - anchor, 0): 0 up to the anchor, then one more a day.
    for attr, crossings in timing.counts:
        anchor = getattr(agg, attr)
        if anchor is not None:
            k = bisect_right(crossings, today - anchor)  # the first after today
            if k < len(crossings):
                day = anchor + crossings[k]
                if day <= LAST_DAY and (best is None or day < best):
                    best = day
    if timing.windows:
        sums = agg.sums if agg.as_of == today else window_sums(agg.days, today)
        changes = _window_changes(agg, timing, today)
        for window, f, money, cuts in timing.sums:
            day = _sum_flip(changes[window], f, sums[window][f], money, cuts, best)
            if day is not None:
                best = day
        if timing.average is not None:
            day = _average_flip(changes[_YEAR], sums[_YEAR], timing.average, best)
            if day is not None:
                best = day
    return best if best != before else None


Moves = list[tuple[int, int, list[int]]]  # (day, +1 or -1, bucket), a day at most once


def _sum_flip(moves: Moves, f: int, value: int, money: bool, cuts: Cuts,
              before: int | None) -> int | None:
    """The first day (before `before`) a window sum leaves the band of today's value."""
    if not moves:
        return None
    lo, hi = cuts.band(max(value, 0) if money else value)
    stop = LAST_DAY + 1 if before is None else before
    for day, sign, bucket in moves:
        if day >= stop:
            return None
        value += sign * bucket[f]
        v = value if value > 0 or not money else 0
        if v < lo or v > hi:
            return day
    return None


def _average_flip(moves: Moves, year: list[int], cuts: Cuts, before: int | None,
                  ) -> int | None:
    """As `_sum_flip`, for the year's average order (`average_units`; null while it has
    no order), for at most MAX_STEPS days on which it moves."""
    net, orders = year[NET], year[ORDERS]
    now = average_units(net, orders)
    lo, hi = cuts.band(now) if now is not None else (0.0, 0.0)  # (unused: any order moves it)
    stop = LAST_DAY + 1 if before is None else before
    steps = 0
    for day, sign, bucket in moves:
        if day >= stop:
            return None
        if not (bucket[NET] or bucket[ORDERS]):
            continue
        net += sign * bucket[NET]
        orders += sign * bucket[ORDERS]
        if not orders or now is None:
            if bool(orders) != (now is not None):
                return day
        else:
            # lo <= round_half_even(n / orders) <= hi, without dividing: n / orders lies
            # above lo - 1/2 (or on it with lo even), below hi + 1/2 (or on it, hi even).
            n2 = 2 * max(net, 0)
            if lo != -inf:
                edge = (2 * lo - 1) * orders
                if n2 < edge or (n2 == edge and lo % 2):
                    return day
            if hi != inf:
                edge = (2 * hi + 1) * orders
                if n2 > edge or (n2 == edge and hi % 2):
                    return day
        steps += 1
        if steps == MAX_STEPS:
            return day
    return None


def _window_changes(agg: Aggregates, timing: Timing, today: int) -> dict[int, Moves]:
    """Per window read, in day order, the buckets that leave it, and those that enter it
    (days that were ahead of the clock): one move a day. (A bucket with nothing a metric
    reads moves nothing.)"""
    days = agg.days
    order = sorted(days)
    ahead = bool(order) and order[-1] > today
    changes: dict[int, Moves] = {}
    for window, length in timing.windows:
        # Leaving days come in the buckets' order, a day apart at least.
        moves = [(day + length, -1, days[day]) for day in order if day + length > today]
        if ahead:  # rare: merged into one move a day
            merged: dict[int, list[int]] = {}
            for day, sign, bucket in moves + [(d, 1, days[d]) for d in order if d > today]:
                row = merged.setdefault(day, [0] * FIELDS)
                for i in range(FIELDS):
                    row[i] += sign * bucket[i]
            moves = [(day, 1, row) for day, row in sorted(merged.items())]
        changes[window] = moves
    return changes


def grace_end_days(pending: Mapping[str, date | None], grace_days: Mapping[str, int],
                   ) -> list[int]:
    """The days the postponed downgrades of a customer take effect (ladder -> the day its
    grace began, and ladder -> its grace length)."""
    return [(since + timedelta(days=grace_days[name])).toordinal()
            for name, since in pending.items() if since is not None and name in grace_days]
