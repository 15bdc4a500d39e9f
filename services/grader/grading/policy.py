"""The policy document: parsed into frozen dataclasses, every problem reported at once."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from services.grader.grading.conditions import (
    COMPARE,
    All,
    AnyOf,
    Condition,
    Leaf,
    Not,
    Test,
    compile_condition,
)
from services.grader.grading.metrics import METRIC_NAMES, in_order
from services.grader.grading.schedule import Timing
from shared.errors import PolicyInvalid

__all__ = [
    "COMPARE", "ActivePolicy", "All", "AnyOf", "Condition", "Ladder", "Leaf", "Not", "Policy",
    "Test", "Tier",
    "compile_condition", "default_policy_document", "metrics_read", "parse_policy",
]

NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
OPS = (">=", ">", "<=", "<", "==", "!=")
MAX_DEPTH = 8
# Beyond every metric's range (money totals stop at about 9.2e14): a larger threshold
# means nothing, and costs the schedule's day arithmetic and 64-bit JSON.
MAX_VALUE = Decimal("1e15")


@dataclass(frozen=True, slots=True)
class Tier:
    """One grade of a ladder; the last tier of a ladder has no `when`."""

    name: str
    label: str
    when: Condition | None
    stay_when: Condition | None
    actions: tuple[str, ...]
    # The conditions compiled to closures once per policy: grading runs them per customer.
    when_test: Test | None = field(default=None, compare=False, repr=False)
    stay_test: Test | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Ladder:
    """Tiers best first; every customer lands on exactly one."""

    name: str
    label: str
    tiers: tuple[Tier, ...]
    downgrade_grace_days: int
    ranks: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranks", {t.name: i for i, t in enumerate(self.tiers)})

    def rank(self, tier: str) -> int | None:
        """Position of `tier` (0 = best), None when the ladder has no such tier."""
        return self.ranks.get(tier)


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy document. `base_currency` is what the document says, if it says
    anything: the currency in force is the setting `TIERFLOW_BASE_CURRENCY`, which a
    policy may repeat but never contradict."""

    base_currency: str | None
    ladders: tuple[Ladder, ...]


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))


def parse_policy(doc: object, *, base_currency: str | None = None) -> Policy:
    """Validate a decoded JSON/YAML document; raises PolicyInvalid listing every problem.
    With `base_currency` (the setting), a document naming another currency is refused."""
    problems = _Problems()
    policy = _policy(doc, problems, base_currency)
    if problems.items or policy is None:
        raise PolicyInvalid(problems.items or [("", "invalid policy")])
    return policy


def _keys(obj: dict[str, Any], allowed: set[str], path: str, problems: _Problems) -> None:
    for key in obj:
        if key not in allowed:
            problems.add(f"{path}.{key}" if path else key, "unknown field")


def _policy(doc: object, problems: _Problems, setting: str | None) -> Policy | None:
    if not isinstance(doc, dict):
        problems.add("", "must be an object")
        return None
    _keys(doc, {"base_currency", "ladders"}, "", problems)
    currency = _currency(doc, problems, setting)
    raw_ladders = doc.get("ladders")
    if not isinstance(raw_ladders, list) or not raw_ladders:
        problems.add("ladders", "must be a non-empty list")
        return None
    ladders = [_ladder(item, f"ladders[{i}]", problems) for i, item in enumerate(raw_ladders)]
    # A bad name is reported once, as bad: never again as a duplicate of another bad one.
    names = [ladder.name for ladder in ladders if ladder is not None and ladder.name]
    for name in {n for n in names if names.count(n) > 1}:
        problems.add("ladders", f"ladder name {name!r} is used more than once")
    if problems.items:
        return None
    return Policy(currency, tuple(ladder for ladder in ladders if ladder is not None))


def _currency(doc: dict[str, Any], problems: _Problems, setting: str | None) -> str | None:
    """The document's `base_currency`: optional, and if given, the setting's currency.
    (Ingest checks events against the setting; a policy saying otherwise would make the
    grader dead-letter every purchase ingest accepted.)"""
    if "base_currency" not in doc:
        return None
    currency = doc["base_currency"]
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
        problems.add("base_currency", "must be a three-letter currency code such as CNY")
        return None
    if setting is not None and currency != setting:
        problems.add("base_currency", f"must be {setting}, the base currency this tierflow "
                     f"runs with (TIERFLOW_BASE_CURRENCY), or be left out; tierflow does "
                     f"not convert currencies")
    return currency


def _name(obj: dict[str, Any], path: str, problems: _Problems) -> str:
    name = obj.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        problems.add(f"{path}.name", "must match [a-z][a-z0-9_]{0,31}")
        return ""
    return name


def _label(obj: dict[str, Any], path: str, problems: _Problems, default: str) -> str:
    label = obj.get("label", default)
    if not isinstance(label, str) or len(label) > 200:
        problems.add(f"{path}.label", "must be text of at most 200 characters")
        return default
    return label


def _ladder(obj: object, path: str, problems: _Problems) -> Ladder | None:
    if not isinstance(obj, dict):
        problems.add(path, "must be an object")
        return None
    _keys(obj, {"name", "label", "downgrade_grace_days", "tiers"}, path, problems)
    name = _name(obj, path, problems)
    grace = obj.get("downgrade_grace_days", 0)
    if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= 3650:
        problems.add(f"{path}.downgrade_grace_days", "must be an integer from 0 to 3650")
        grace = 0
    raw_tiers = obj.get("tiers")
    if not isinstance(raw_tiers, list) or not raw_tiers:
        problems.add(f"{path}.tiers", "must be a non-empty list")
        raw_tiers = []  # go on: the ladder's name still counts towards duplicates
    last = len(raw_tiers) - 1
    tiers = [
        _tier(item, f"{path}.tiers[{i}]", problems, is_last=i == last)
        for i, item in enumerate(raw_tiers)
    ]
    names = [tier.name for tier in tiers if tier is not None and tier.name]
    for dup in {n for n in names if names.count(n) > 1}:
        problems.add(f"{path}.tiers", f"tier name {dup!r} is used more than once")
    kept = tuple(tier for tier in tiers if tier is not None)
    return Ladder(name, _label(obj, path, problems, name), kept, grace)


def _tier(obj: object, path: str, problems: _Problems, *, is_last: bool) -> Tier | None:
    if not isinstance(obj, dict):
        problems.add(path, "must be an object")
        return None
    _keys(obj, {"name", "label", "when", "stay_when", "actions"}, path, problems)
    name = _name(obj, path, problems)
    if is_last and "when" in obj:
        problems.add(f"{path}.when", "the last tier catches everyone else and takes no `when`")
    if not is_last and "when" not in obj:
        problems.add(f"{path}.when", "required on every tier but the last")
    when = _condition(obj["when"], f"{path}.when", problems, 1) if "when" in obj else None
    stay = (
        _condition(obj["stay_when"], f"{path}.stay_when", problems, 1)
        if "stay_when" in obj else None
    )
    actions = obj.get("actions", [])
    if not isinstance(actions, list) or not all(
        isinstance(a, str) and 0 < len(a) <= 64 for a in actions
    ):
        problems.add(f"{path}.actions", "must be a list of strings (1-64 characters)")
        actions = []
    return Tier(name, _label(obj, path, problems, name), when, stay, tuple(actions),
                compile_condition(when) if when else None,
                compile_condition(stay) if stay else None)


def _condition(obj: object, path: str, problems: _Problems, depth: int) -> Condition | None:
    if depth > MAX_DEPTH:
        problems.add(path, f"conditions nest at most {MAX_DEPTH} deep")
        return None
    if not isinstance(obj, dict):
        problems.add(path, "must be an object: a leaf, all, any or not")
        return None
    kinds = [k for k in ("all", "any", "not", "metric") if k in obj]
    if len(kinds) != 1:
        problems.add(path, "must be exactly one of: a leaf {metric, op, value}, all, any, not")
        return None
    kind = kinds[0]
    if kind == "metric":
        return _leaf(obj, path, problems)
    _keys(obj, {kind}, path, problems)
    if kind == "not":
        part = _condition(obj["not"], f"{path}.not", problems, depth + 1)
        return Not(part) if part is not None else None
    items = obj[kind]
    if not isinstance(items, list) or not items:
        problems.add(f"{path}.{kind}", "must be a non-empty list of conditions")
        return None
    parts = [_condition(c, f"{path}.{kind}[{i}]", problems, depth + 1) for i, c in enumerate(items)]
    if any(p is None for p in parts):
        return None
    kept = tuple(p for p in parts if p is not None)
    return All(kept) if kind == "all" else AnyOf(kept)


def _leaf(obj: dict[str, Any], path: str, problems: _Problems) -> Leaf | None:
    _keys(obj, {"metric", "op", "value"}, path, problems)
    metric, op, value = obj.get("metric"), obj.get("op"), obj.get("value")
    ok = True
    if metric not in METRIC_NAMES:
        problems.add(f"{path}.metric", f"unknown metric {metric!r}")
        ok = False
    if op not in OPS:
        problems.add(f"{path}.op", f"must be one of {', '.join(OPS)}")
        ok = False
    number = _number(value)
    if number is None:
        problems.add(f"{path}.value", "must be a number (or a decimal string)")
        ok = False
    elif abs(number) > MAX_VALUE:
        problems.add(f"{path}.value", "must be between -1e15 and 1e15")
        ok = False
    if not ok or number is None:
        return None
    return Leaf(str(metric), str(op), number)


def _number(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value))
    except ArithmeticError:
        return None
    return number if number.is_finite() else None


def metrics_read(ladder: Ladder) -> tuple[str, ...]:
    """The metric names a ladder's conditions read, in first-seen order."""
    seen: dict[str, None] = {}

    def walk(cond: Condition | None) -> None:
        if isinstance(cond, Leaf):
            seen.setdefault(cond.metric)
        elif isinstance(cond, All | AnyOf):
            for part in cond.parts:
                walk(part)
        elif isinstance(cond, Not):
            walk(cond.part)

    for tier in ladder.tiers:
        walk(tier.when)
        walk(tier.stay_when)
    return tuple(seen)


@dataclass(frozen=True)
class ActivePolicy:
    """A stored policy version with what grading needs precomputed."""

    version: int
    policy: Policy
    document: dict[str, Any]
    reads: dict[str, tuple[str, ...]] = field(default_factory=dict)
    all_reads: tuple[str, ...] = ()  # every metric read, in the order of METRIC_NAMES
    # What time alone can change (services/grader/grading/schedule.py), and each
    # ladder's grace period in days.
    timing: Timing = field(default_factory=lambda: Timing.of(()))
    grace_days: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_document(cls, version: int, document: dict[str, Any], *,
                      base_currency: str | None = None) -> ActivePolicy:
        """Parse (validated before it was stored) and index the metrics each ladder reads;
        raises PolicyInvalid when the document contradicts `base_currency` (the setting)."""
        policy = parse_policy(document, base_currency=base_currency)
        reads = {ladder.name: metrics_read(ladder) for ladder in policy.ladders}
        every = in_order({name for names in reads.values() for name in names})
        conditions = [c for ladder in policy.ladders for tier in ladder.tiers
                      for c in (tier.when, tier.stay_when) if c is not None]
        grace = {ladder.name: ladder.downgrade_grace_days for ladder in policy.ladders}
        return cls(version, policy, document, reads, every, Timing.of(conditions), grace)


def default_policy_document() -> dict[str, Any]:
    """The shipped default policy (four ladders: tier, value, lifecycle, nps)."""
    text = (Path(__file__).with_name("default_policy.json")).read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc
