"""When time alone can next move a customer (pure).

With no new event, a customer's grade can change only on a day when one of the policy's
leaves that reads a time-dependent metric changes its answer (a window dropping an old
day, or taking in a day that was ahead of the clock; a days-since count crossing its
threshold), or when a downgrade's grace period ends. `next_due` finds the first such day
after `today`, evaluating the leaves with the grading code itself (`metrics.metric_at`,
the compiled conditions) on the window sums as they will be that day; the owner re-grades
the customer then, with `reason: schedule`, and not before. Customers nothing can move
are never re-graded by time at all.

The search looks at most `MAX_STEPS` candidate days; when none of them flips a leaf, the
last one is returned: a re-grade that day finds nothing to do and looks further. So a
customer with a year of daily activity costs a bounded search per grading, and the day
returned is never later than the real one.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from math import ceil, floor

from services.grader.grading.aggregates import (
    COMPLAINTS,
    FIELDS,
    INTERACTIONS,
    NET,
    ORDERS,
    REFERRALS,
    WINDOWS,
    Aggregates,
    window_sums,
)
from services.grader.grading.conditions import Condition, Leaf, leaves
from services.grader.grading.metrics import Value, metric_at

# How far a search looks (candidate days, not calendar days) before settling for a
# re-grade on the last day it looked at.
MAX_STEPS = 48
LAST_DAY = date.max.toordinal()

_YEAR = len(WINDOWS) - 1
_KINDS = {"spend": (NET,), "orders": (ORDERS,), "interactions": (INTERACTIONS,)}
# Metrics whose value moves with the calendar alone: the windows and bucket fields they
# read, and the days-since counts with the figure each counts from.
WINDOWS_READ: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    **{f"{kind}_{n}d": ((i,), fields) for i, n in enumerate(WINDOWS)
       for kind, fields in _KINDS.items()},
    "avg_order_value_365d": ((_YEAR,), (NET, ORDERS)),
    "referrals_365d": ((_YEAR,), (REFERRALS,)),
    "complaints_365d": ((_YEAR,), (COMPLAINTS,)),
    "complaints_90d": ((WINDOWS.index(90),), (COMPLAINTS,)),
}
DAYS_SINCE: dict[str, str] = {
    "days_since_first_purchase": "first_purchase",
    "days_since_last_purchase": "last_purchase",
    "days_since_last_interaction": "last_interaction",
    "days_since_last_activity": "last_activity",
}


@dataclass(frozen=True, slots=True)
class Cuts:
    """The thresholds of every leaf on one metric, sorted by how a leaf compares with them.

    Two values of the metric get the same answer from every one of those leaves exactly
    when they have the same `signature`: `>=` and `<` ask whether t <= v (how many of
    `right` are <= v), `>` and `<=` whether t < v (how many of `left` are < v), `==` and
    `!=` which of `equal`, if any, v is. (A null value is false for every op.)"""

    right: tuple[Decimal, ...]
    left: tuple[Decimal, ...]
    equal: tuple[Decimal, ...]

    def signature(self, value: Value) -> tuple[int, int, int] | None:
        """The class of `value` (see above)."""
        if value is None:
            return None
        hit = -1
        if self.equal:
            at = bisect_left(self.equal, value)
            hit = at if at < len(self.equal) and self.equal[at] == value else -1
        return (bisect_right(self.right, value) if self.right else 0,
                bisect_left(self.left, value) if self.left else 0, hit)


@dataclass(frozen=True, slots=True)
class Timing:
    """What a policy's schedule looks at: the metrics of its leaves that time alone moves,
    on windows or on days-since counts, with their thresholds."""

    windowed: dict[str, Cuts]
    counted: dict[str, Cuts]
    windows: tuple[tuple[int, int], ...]  # (index into WINDOWS, its length in days)
    fields: tuple[int, ...]  # bucket fields the windowed metrics read
    # Every windowed signature moves one way while the windows only lose non-negative
    # buckets (no ==, no !=, no average): a binary search finds the day.
    monotone: bool = False

    @classmethod
    def of(cls, conditions: Iterable[Condition]) -> Timing:
        """From every `when` and `stay_when` of a policy."""
        by_metric: dict[str, list[Leaf]] = {}
        for condition in conditions:
            for leaf in leaves(condition):
                if leaf.metric in WINDOWS_READ or leaf.metric in DAYS_SINCE:
                    by_metric.setdefault(leaf.metric, []).append(leaf)
        cuts = {metric: _cuts(leaves) for metric, leaves in by_metric.items()}
        windowed = {m: c for m, c in cuts.items() if m in WINDOWS_READ}
        counted = {m: c for m, c in cuts.items() if m in DAYS_SINCE}
        windows = sorted({i for m in windowed for i in WINDOWS_READ[m][0]})
        fields = sorted({f for m in windowed for f in WINDOWS_READ[m][1]})
        monotone = all(not c.equal and m != "avg_order_value_365d" for m, c in windowed.items())
        return cls(windowed, counted, tuple((i, WINDOWS[i]) for i in windows), tuple(fields),
                   monotone)


def _cuts(leaves: list[Leaf]) -> Cuts:
    def of(ops: tuple[str, ...]) -> tuple[Decimal, ...]:
        return tuple(sorted({leaf.value for leaf in leaves if leaf.op in ops}))

    return Cuts(of((">=", "<")), of((">", "<=")), of(("==", "!=")))


def next_due(agg: Aggregates, timing: Timing, today: int,
             grace_ends: Iterable[int] = ()) -> int | None:
    """The first day after `today` (ordinals) on which a re-grade may give another answer
    with no new event: a leaf of `timing` flips, or one of `grace_ends` comes; None when
    nothing but an event can move the customer."""
    due = min((day for day in grace_ends if day > today), default=None)
    flip = first_flip(agg, timing, today, before=due)
    if flip is not None and (due is None or flip < due):
        due = flip
    return due


def first_flip(agg: Aggregates, timing: Timing, today: int, *,
               before: int | None = None) -> int | None:
    """The first day after `today`, and before `before`, on which a leaf of `timing`
    answers otherwise than it does today (or the last day of a search that stopped at
    MAX_STEPS); None when there is none.

    A days-since leaf can change its answer only on its threshold days, and a window leaf
    only on a day a bucket with something it reads enters or leaves the window: each kind
    is searched on its own days, the counts first (a handful of days, and the first flip
    bounds the window search)."""
    flip = _counted_flip(agg, timing, today, before)
    return _windowed_flip(agg, timing, today, before if flip is None else flip) or flip


def _counted_flip(agg: Aggregates, timing: Timing, today: int, before: int | None,
                  ) -> int | None:
    if not timing.counted:
        return None
    days = _threshold_days(agg, timing, today)
    if before is not None:
        days = {day for day in days if day < before}
    if not days:
        return None
    now = _classes(timing.counted, agg, today, agg.sums)
    for day in sorted(days):
        if _classes(timing.counted, agg, day, agg.sums) != now:
            return day
    return None


def _windowed_flip(agg: Aggregates, timing: Timing, today: int, before: int | None,
                   ) -> int | None:
    if not timing.windowed:
        return None
    changes = _window_changes(agg, timing, today)
    days = sorted(day for day in changes if before is None or day < before)
    if not days:
        return None
    sums = [row[:] for row in (agg.sums if agg.as_of == today else window_sums(agg.days, today))]
    now = _classes(timing.windowed, agg, today, sums)
    if timing.monotone and all(sign < 0 and all(bucket[f] >= 0 for f in timing.fields)
                               for day in days for _, bucket, sign in changes[day]):
        return _bisect_flip(agg, timing, days, changes, sums, now)
    for step, day in enumerate(days):
        for window, bucket, sign in changes[day]:
            row = sums[window]
            for i in range(FIELDS):
                row[i] += sign * bucket[i]
        if _classes(timing.windowed, agg, day, sums) != now:
            return day
        if step + 1 == MAX_STEPS:
            return day
    return None


def _bisect_flip(agg: Aggregates, timing: Timing, days: list[int],
                 changes: dict[int, list[tuple[int, list[int], int]]],
                 sums: list[list[int]], now: list[object]) -> int | None:
    """The first of `days` whose classes differ from `now`, when the windows only lose
    non-negative buckets: one evaluation when nothing flips, a binary search when it does."""
    snapshots = []
    for day in days:
        sums = list(sums)
        for window, bucket, sign in changes[day]:
            sums[window] = [a + sign * b for a, b in zip(sums[window], bucket, strict=True)]
        snapshots.append(sums)

    def differs(i: int) -> bool:
        return _classes(timing.windowed, agg, days[i], snapshots[i]) != now

    if not differs(len(days) - 1):
        return None
    lo, hi = 0, len(days) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if differs(mid):
            hi = mid
        else:
            lo = mid + 1
    return days[lo]


def _classes(cuts: dict[str, Cuts], agg: Aggregates, day: int, sums: list[list[int]],
             ) -> list[object]:
    """Each metric's class on `day`: equal lists, equal answers from every leaf."""
    return [c.signature(metric_at(name, agg, day, sums)) for name, c in cuts.items()]


def _window_changes(agg: Aggregates, timing: Timing, today: int,
                    ) -> dict[int, list[tuple[int, list[int], int]]]:
    """Per day after `today`: the buckets entering (a day that was ahead of the clock) or
    leaving each window read, when they hold something the window metrics read."""
    changes: dict[int, list[tuple[int, list[int], int]]] = {}
    fields, windows = timing.fields, timing.windows
    first = today - max(length for _, length in windows)  # buckets up to it are out of all
    for day, bucket in agg.days.items():
        if day <= first or not any([bucket[f] for f in fields]):
            continue
        for window, length in windows:
            leaves_on = day + length
            if leaves_on <= today:
                continue  # out of this window already, for good
            if day > today:
                changes.setdefault(day, []).append((window, bucket, 1))
            entry = changes.get(leaves_on)
            if entry is None:
                changes[leaves_on] = [(window, bucket, -1)]
            else:
                entry.append((window, bucket, -1))
    return changes


def _threshold_days(agg: Aggregates, timing: Timing, today: int) -> set[int]:
    """Days on which a days-since count reaches a leaf's threshold, or passes it."""
    days: set[int] = set()
    for metric, cuts in timing.counted.items():
        anchor = getattr(agg, DAYS_SINCE[metric])
        if anchor is None:
            continue
        for threshold in (*cuts.right, *cuts.left, *cuts.equal):
            if abs(threshold) > LAST_DAY:  # no date that far: no day to find
                continue
            for offset in (ceil(threshold), floor(threshold) + 1):
                day = anchor + offset
                if today < day <= LAST_DAY:
                    days.add(day)
    return days


def grace_end_days(pending: Mapping[str, date | None], grace_days: Mapping[str, int],
                   ) -> list[int]:
    """The days the postponed downgrades of a customer take effect (ladder -> the day its
    grace began, and ladder -> its grace length)."""
    return [(since + timedelta(days=grace_days[name])).toordinal()
            for name, since in pending.items() if since is not None and name in grace_days]
