"""The newest stored policy, as one process knows it."""

from __future__ import annotations

import asyncpg

from services.grader import repository as repo
from services.grader.grading.policy import ActivePolicy, default_policy_document
from shared.errors import ConfigError, PolicyInvalid

SEED_LOCK = 774412


class PolicyRefused(ConfigError):
    """The newest stored policy contradicts this process's settings: it is not used."""


class PolicyCache:
    """Holds the newest policy; cheap to refresh once per batch. `base_currency` is the
    setting every policy has to agree with."""

    def __init__(self, *, base_currency: str) -> None:
        self.base_currency = base_currency
        self._active: ActivePolicy | None = None

    @property
    def active(self) -> ActivePolicy:
        """The newest policy known to this process."""
        if self._active is None:
            raise RuntimeError("policy not loaded yet")
        return self._active

    async def load(self, conn: asyncpg.Connection) -> ActivePolicy:
        """Load the newest policy, storing the shipped default (in the base currency) as
        version 1 if none exists; raises PolicyRefused when it contradicts the settings."""
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SEED_LOCK)
            latest = await repo.latest_policy(conn)
            if latest is None:
                document = {**default_policy_document(), "base_currency": self.base_currency}
                latest = (await repo.insert_policy(conn, document), document)
        version, document = latest
        try:
            self._active = ActivePolicy.from_document(
                version, document, base_currency=self.base_currency)
        except PolicyInvalid as exc:
            # Never grade by it quietly: every purchase would be dead-lettered. Start-up
            # fails, and a running process keeps failing to refresh (logged), until the
            # setting or the policy is put right.
            raise PolicyRefused(
                f"stored policy version {version} cannot be used: {exc}. Set "
                f"TIERFLOW_BASE_CURRENCY to the policy's base_currency on every process, "
                f"or store a policy without one (PUT /v1/policy)") from None
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
