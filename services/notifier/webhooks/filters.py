"""Which tier changes a subscription wants (pure)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FIELDS = ("ladders", "to_tiers", "directions", "types")
DIRECTIONS = frozenset({"up", "down", "initial"})
TYPES = frozenset({"tier.changed", "tier.downgrade_scheduled", "customer.erased"})
# A customer's erasure goes to the subscriptions that were sent something about the
# customer (and take its type), whatever ladders, tiers and directions they ask for: they
# hold data to delete. The others never learn the id.
ERASED = "customer.erased"


@dataclass(frozen=True, slots=True)
class Filter:
    """Each field a set of accepted values; None accepts anything."""

    ladders: frozenset[str] | None = None
    to_tiers: frozenset[str] | None = None
    directions: frozenset[str] | None = None
    types: frozenset[str] | None = None

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Filter:
        """From the stored JSON (lists, or absent/null for any)."""
        values = {f: document.get(f) for f in FIELDS}
        return cls(**{f: None if v is None else frozenset(v) for f, v in values.items()})

    def document(self) -> dict[str, list[str] | None]:
        """The JSON form, lists sorted."""
        return {f: None if (v := getattr(self, f)) is None else sorted(v) for f in FIELDS}

    def matches(self, *, kind: str, ladder: str, to_tier: str | None, direction: str) -> bool:
        """Whether a message with these fields goes to the subscription."""
        if kind == ERASED:
            return self.types is None or kind in self.types
        return (
            (self.types is None or kind in self.types)
            and (self.ladders is None or ladder in self.ladders)
            and (self.to_tiers is None or (to_tier is not None and to_tier in self.to_tiers))
            and (self.directions is None or direction in self.directions)
        )


def fan_out(
    changes: Sequence[Change], subscriptions: Sequence[tuple[uuid.UUID, Filter]],
    informed: Mapping[str, frozenset[uuid.UUID]] | None = None,
) -> list[tuple[uuid.UUID, int, str, str]]:
    """(subscription, change id, customer, ladder) for each match, in change order; an
    erasure only to the subscriptions `informed` of its customer (sent something before)."""
    out = []
    for change in changes:
        for sid, wanted in subscriptions:
            if change.kind == ERASED and sid not in (informed or {}).get(
                    change.customer_id, frozenset()):
                continue
            if wanted.matches(
                kind=change.kind, ladder=change.ladder, to_tier=change.to_tier,
                direction=change.direction,
            ):
                out.append((sid, change.id, change.customer_id, change.ladder))
    return out


@dataclass(frozen=True, slots=True)
class Change:
    """What a filter looks at in a relayed tier change."""

    id: int
    customer_id: str
    kind: str
    ladder: str
    to_tier: str | None
    direction: str
