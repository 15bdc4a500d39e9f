"""What a policy would do to customers if it were stored now (pure): each customer graded
under it exactly as the policy job will grade them, the transitions counted per ladder."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from services.grader.grading.customer import CustomerState, grade_customer
from services.grader.grading.policy import ActivePolicy

EXAMPLES = 5


@dataclass
class Transitions:
    """Per ladder, (from tier, to tier) -> customers, a few of them by id, and the
    downgrades a grace period would postpone; `from` is None for a ladder the customer
    was never graded on."""

    customers: int = 0
    changed: int = 0  # customers whose tier moves on at least one ladder
    counts: dict[str, dict[tuple[str | None, str], int]] = field(default_factory=dict)
    examples: dict[str, dict[tuple[str | None, str], list[str]]] = field(default_factory=dict)
    postponed: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict)

    def add(self, state: CustomerState, active: ActivePolicy, *, now: datetime) -> None:
        """Grade `state` (decoded for this, so changed in place) under `active`."""
        before = {name: s.tier for name, s in state.ladders.items()}
        grade_customer(state, active, now=now, today=now.date(), reason="policy",
                       schedule="none")
        self.customers += 1
        moved = False
        for ladder in active.policy.ladders:
            standing = state.ladders[ladder.name]
            move = (before.get(ladder.name), standing.tier)
            counts = self.counts.setdefault(ladder.name, {})
            counts[move] = counts.get(move, 0) + 1
            if move[0] != move[1]:
                moved = True
                examples = self.examples.setdefault(ladder.name, {}).setdefault(move, [])
                if len(examples) < EXAMPLES:
                    examples.append(state.customer_id)
            if standing.pending_since is not None and standing.computed != standing.tier:
                wait = self.postponed.setdefault(ladder.name, {})
                key = (standing.tier, standing.computed)
                wait[key] = wait.get(key, 0) + 1
        self.changed += moved

    def merge(self, other: Transitions) -> None:
        """Add another share's counts (examples up to EXAMPLES per transition)."""
        self.customers += other.customers
        self.changed += other.changed
        for ladder, counts in other.counts.items():
            mine = self.counts.setdefault(ladder, {})
            for move, n in counts.items():
                mine[move] = mine.get(move, 0) + n
        for ladder, by_move in other.examples.items():
            mine_ex = self.examples.setdefault(ladder, {})
            for move, ids in by_move.items():
                kept = mine_ex.setdefault(move, [])
                kept.extend(ids[:EXAMPLES - len(kept)])
        for ladder, waits in other.postponed.items():
            mine_wait = self.postponed.setdefault(ladder, {})
            for key, n in waits.items():
                mine_wait[key] = mine_wait.get(key, 0) + n
