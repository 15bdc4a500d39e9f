"""A realistic, seeded two-year customer history for `tierflow demo`: pure and deterministic.

Each customer has their own random stream (seed + index), so customer 7's history is the
same whatever the number of customers, and event ids repeat exactly on a re-run: sending
the demo twice changes nothing the second time.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from datetime import datetime, time, timedelta, timezone
from typing import Any

CHINA = timezone(timedelta(hours=8))
CURRENCY = "CNY"
HISTORY_DAYS = 729
# Out of 100 (see `persona_of`). Together they fill every tier of every ladder of the
# default policy and every quadrant of the dashboard's value-against-loyalty scatter
# (spend_365d against orders_365d, split at the `tier` ladder's bars: 10,000 and 12).
PERSONA_WEIGHTS = (
    ("vip", 3), ("important", 10), ("referrer", 4), ("regular", 24), ("frequent", 6),
    ("one_time", 12), ("prospect", 12), ("new", 8), ("churned", 10), ("complainer", 5),
    ("promoter", 3), ("detractor", 3),
)
PERSONAS = tuple(name for name, _ in PERSONA_WEIGHTS)
_SLOTS = tuple(name for name, weight in PERSONA_WEIGHTS for _ in range(weight))
CATEGORIES = ("shoes", "apparel", "electronics", "beauty", "home", "sports", "books",
              "grocery", "jewelry", "toys")
CHANNELS = {
    "visit": ("web", "app", "store", "wechat"), "click": ("web", "app", "email", "wechat"),
    "open": ("email", "sms", "app"), "login": ("web", "app"),
    "support_contact": ("phone", "wechat", "email"), "referral": ("wechat", "app", "web"),
    "campaign_response": ("email", "sms", "wechat"),
}
ROUTINE = ("visit", "visit", "click", "open", "login", "campaign_response")
BROWSING = ("visit", "visit", "click", "open", "campaign_response")
PRAISE = ("服务很好，下次还来", "Great quality, fast delivery", "店员很专业", "Love the new line")
COMPLAINTS = ("快递太慢了", "商品有瑕疵，要求退货", "客服电话一直打不通",
              "Wrong size delivered twice", "Charged twice for one order")


def persona_of(index: int) -> str:
    """Every block of 100 consecutive customers holds each persona as often as its weight."""
    return _SLOTS[(index * 37 + 11) % len(_SLOTS)]  # 37 is coprime to 100: a permutation


def customer_id(index: int) -> str:
    """The demo's customer ids: c-100001, c-100002, …"""
    return f"c-{100001 + index}"


def money(cents: int) -> str:
    """Cents as a decimal string with two decimals (never a float)."""
    return f"{cents // 100}.{cents % 100:02d}"


class History:
    """One customer's events under construction, drawn from the customer's own random stream."""

    def __init__(self, index: int, *, seed: int, now: datetime) -> None:
        self.rng = random.Random(f"tierflow-demo:{seed}:{index}")  # noqa: S311 - not secrets
        self.customer = customer_id(index)
        self.prefix = f"demo-{seed}-{index}"
        self.now = now
        self.latest = now - timedelta(minutes=2)
        self.events: list[tuple[datetime, dict[str, Any]]] = []
        self.orders: list[tuple[datetime, str, int]] = []

    def day(self, newest: int, oldest: int) -> datetime:
        """A moment in shop hours (09–22 China time) between `newest` and `oldest` days ago."""
        date = self.now.astimezone(CHINA).date() - timedelta(days=self.rng.randint(newest, oldest))
        at = datetime.combine(date, time(9), CHINA) + timedelta(seconds=self.rng.randrange(46_800))
        if at > self.latest:
            at = self.latest - timedelta(seconds=self.rng.randrange(3600))
        return at

    def add(self, at: datetime, kind: str, data: dict[str, Any], source: str) -> None:
        """Record one event; its id is the customer's prefix and a running number."""
        event = {
            "event_id": f"{self.prefix}-{len(self.events) + 1:04d}", "type": kind,
            "customer_id": self.customer,
            "occurred_at": at.astimezone(CHINA).isoformat(timespec="seconds"),
            "source": source, "data": data,
        }
        self.events.append((at, event))

    def purchases(self, count: int, newest: int, oldest: int, low: int, high: int) -> None:
        """`count` orders between `newest` and `oldest` days ago, `low`–`high` CNY each."""
        for _ in range(count):
            at, cents = self.day(newest, oldest), self.rng.randint(low * 100, high * 100)
            order = f"o-{self.prefix}-{len(self.orders) + 1}"
            self.orders.append((at, order, cents))
            self.add(at, "purchase", {
                "amount": money(cents), "currency": CURRENCY, "order_id": order,
                "category": self.rng.choice(CATEGORIES),
                "quantity": self.rng.choice((1, 1, 1, 2, 2, 3)),
            }, self.rng.choice(("pos", "web", "app", "mini-program")))

    def refunds(self, share: float) -> None:
        """Refund about `share` of the orders, in full or in part, a few days later."""
        for at, order, cents in list(self.orders):
            if self.rng.random() >= share:
                continue
            when = at + timedelta(days=self.rng.randint(1, 20), minutes=self.rng.randrange(600))
            full = self.rng.random() < 0.6
            part = cents if full else self.rng.randint(max(cents // 10, 1), cents)
            if when <= self.latest:
                self.add(when, "refund",
                         {"amount": money(part), "currency": CURRENCY, "order_id": order}, "pos")

    def interactions(
        self, count: int, newest: int, oldest: int, actions: tuple[str, ...] = ROUTINE
    ) -> None:
        """`count` interactions on channels that fit each action."""
        for _ in range(count):
            action = self.rng.choice(actions)
            channel = self.rng.choice(CHANNELS[action])
            self.add(self.day(newest, oldest), "interaction",
                     {"channel": channel, "action": action}, "crm")

    def feedback(self, at: datetime, **data: Any) -> None:
        """A survey answer or complaint; fields left None are omitted."""
        self.add(at, "feedback", {k: v for k, v in data.items() if v is not None}, "survey")

    def between(self, low: int, high: int) -> int:
        """A count in [low, high]."""
        return self.rng.randint(low, high)


def _vip(h: History) -> None:
    h.purchases(h.between(18, 40), 0, 364, 2500, 9000)
    h.purchases(h.between(8, 30), 365, HISTORY_DAYS, 1500, 8000)
    h.purchases(1, 0, 14, 2500, 9000)
    h.refunds(0.04)
    h.interactions(h.between(15, 50), 0, HISTORY_DAYS)
    for _ in range(h.between(1, 3)):
        h.feedback(h.day(0, 364), rating=h.between(4, 5), nps=h.between(8, 10))


def _important(h: History) -> None:
    # At most 14 × 3,300 a year: above the 10,000 of `important`, below VIP's 50,000.
    h.purchases(h.between(7, 14), 0, 364, 1500, 3300)
    h.purchases(h.between(3, 12), 365, HISTORY_DAYS, 500, 3000)
    h.refunds(0.05)
    h.interactions(h.between(8, 30), 0, HISTORY_DAYS)
    if h.rng.random() < 0.5:
        h.feedback(h.day(0, 364), rating=h.between(3, 5), nps=h.between(6, 10))


def _referrer(h: History) -> None:
    h.purchases(h.between(2, 6), 0, 600, 150, 900)
    h.interactions(h.between(3, 7), 0, 300, ("referral",))
    h.interactions(h.between(5, 20), 0, HISTORY_DAYS)
    if h.rng.random() < 0.6:
        h.feedback(h.day(0, 200), nps=h.between(9, 10), comment=h.rng.choice(PRAISE))


def _regular(h: History) -> None:
    h.purchases(h.between(2, 9), 0, HISTORY_DAYS, 60, 900)
    h.refunds(0.05)
    h.interactions(h.between(2, 18), 0, HISTORY_DAYS)
    if h.rng.random() < 0.3:
        h.feedback(h.day(0, 500), rating=h.between(3, 5),
                   nps=h.between(6, 9) if h.rng.random() < 0.5 else None)


def _frequent(h: History) -> None:
    # Small baskets, often: at least 12 orders a year (the `tier` ladder's bar on orders)
    # but at most 28 × 330 = 9,240 a year, below its 10,000 on spend: loyal, not valuable.
    h.purchases(h.between(14, 28), 0, 364, 40, 330)
    h.purchases(h.between(6, 20), 365, HISTORY_DAYS, 40, 330)
    h.refunds(0.03)
    h.interactions(h.between(10, 40), 0, HISTORY_DAYS)
    if h.rng.random() < 0.4:
        h.feedback(h.day(0, 200), rating=h.between(3, 5), nps=h.between(7, 10))


def _one_time(h: History) -> None:
    h.purchases(1, 31, 700, 80, 1500)
    h.interactions(h.between(0, 4), 0, HISTORY_DAYS)


def _prospect(h: History) -> None:
    h.interactions(h.between(2, 20), 0, 400, BROWSING)


def _new(h: History) -> None:
    h.purchases(h.between(1, 3), 0, 29, 80, 2000)
    h.interactions(h.between(1, 8), 0, 45, ("visit", "login", "click"))


def _churned(h: History) -> None:
    # 205 days, not 200: China's date can be a day ahead of the UTC date the grader counts.
    h.purchases(h.between(1, 8), 205, HISTORY_DAYS, 80, 1200)
    h.interactions(h.between(0, 8), 205, HISTORY_DAYS)
    if h.rng.random() < 0.2:
        h.feedback(h.day(205, HISTORY_DAYS), rating=h.between(2, 4))


def _complainer(h: History) -> None:
    h.purchases(h.between(2, 8), 0, HISTORY_DAYS, 100, 1500)
    h.refunds(0.3)
    h.interactions(h.between(1, 4), 0, 180, ("support_contact",))
    h.feedback(h.day(0, 80), complaint=True, rating=h.between(1, 2),
               comment=h.rng.choice(COMPLAINTS))
    for _ in range(h.between(0, 2)):
        h.feedback(h.day(0, 300), complaint=True, rating=h.between(1, 2),
                   nps=h.between(0, 4) if h.rng.random() < 0.5 else None,
                   comment=h.rng.choice(COMPLAINTS))


def _promoter(h: History) -> None:
    h.purchases(h.between(3, 10), 0, HISTORY_DAYS, 150, 1500)
    h.interactions(h.between(5, 20), 0, HISTORY_DAYS)
    for _ in range(h.between(1, 3)):
        h.feedback(h.day(0, 120), nps=h.between(9, 10), rating=h.between(4, 5),
                   comment=h.rng.choice(PRAISE))


def _detractor(h: History) -> None:
    h.purchases(h.between(1, 5), 0, HISTORY_DAYS, 60, 800)
    for _ in range(h.between(1, 2)):
        h.feedback(h.day(0, 180), nps=h.between(0, 6), rating=h.between(1, 3),
                   complaint=h.rng.random() < 0.2)


BUILDERS: dict[str, Callable[[History], None]] = {
    "vip": _vip, "important": _important, "referrer": _referrer, "regular": _regular,
    "frequent": _frequent, "one_time": _one_time, "prospect": _prospect, "new": _new,
    "churned": _churned, "complainer": _complainer, "promoter": _promoter,
    "detractor": _detractor,
}


def customer_history(
    index: int, *, seed: int, now: datetime
) -> list[tuple[datetime, dict[str, Any]]]:
    """One customer's events with their instants, in the order they were generated."""
    history = History(index, seed=seed, now=now)
    BUILDERS[persona_of(index)](history)
    return history.events


def generate(customers: int, *, seed: int, now: datetime) -> list[dict[str, Any]]:
    """Every customer's events, ordered by occurred_at, as a replay of the past would send them."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    rows = [row for index in range(customers)
            for row in customer_history(index, seed=seed, now=now)]
    rows.sort(key=lambda row: (row[0], row[1]["event_id"]))
    return [event for _, event in rows]


def persona_counts(customers: int) -> Counter[str]:
    """How many of the first `customers` customers each persona has."""
    return Counter(persona_of(index) for index in range(customers))
