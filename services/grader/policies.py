"""The active policy, shared by the consume loop, the re-grader and the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.grader import repository as repo
from services.grader.grading.policy import (
    Policy,
    default_policy_document,
    metrics_read,
    parse_policy,
)

SEED_LOCK = 774412


@dataclass(frozen=True)
class ActivePolicy:
    """A policy version with what grading needs precomputed."""

    version: int
    policy: Policy
    document: dict[str, Any]
    reads: dict[str, tuple[str, ...]] = field(default_factory=dict)
    all_reads: frozenset[str] = frozenset()

    @classmethod
    def from_document(cls, version: int, document: dict[str, Any]) -> ActivePolicy:
        """Parse (validated before it was stored) and index the metrics each ladder reads."""
        policy = parse_policy(document)
        reads = {ladder.name: metrics_read(ladder) for ladder in policy.ladders}
        every = frozenset(name for names in reads.values() for name in names)
        return cls(version, policy, document, reads, every)


class PolicyCache:
    """Holds the newest policy; cheap to refresh once per batch."""

    def __init__(self) -> None:
        self._active: ActivePolicy | None = None

    @property
    def active(self) -> ActivePolicy:
        """The newest policy known to this process."""
        if self._active is None:
            raise RuntimeError("policy not loaded yet")
        return self._active

    async def load(self, conn: asyncpg.Connection) -> ActivePolicy:
        """Load the newest policy, storing the shipped default as version 1 if none exists."""
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SEED_LOCK)
            latest = await repo.latest_policy(conn)
            if latest is None:
                document = default_policy_document()
                latest = (await repo.insert_policy(conn, document), document)
        self._active = ActivePolicy.from_document(*latest)
        return self._active

    async def refresh(self, conn: asyncpg.Connection) -> ActivePolicy:
        """Reload only when another process (or request) stored a newer version."""
        if self._active is None or await repo.latest_policy_version(conn) != self._active.version:
            return await self.load(conn)
        return self._active

    def install(self, active: ActivePolicy) -> None:
        """Use a version this process just stored."""
        if self._active is None or active.version > self._active.version:
            self._active = active
