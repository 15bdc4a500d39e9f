"""The newest stored policy, as one process knows it."""

from __future__ import annotations

import asyncpg

from services.grader import repository as repo
from services.grader.grading.policy import ActivePolicy, default_policy_document

SEED_LOCK = 774412


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
