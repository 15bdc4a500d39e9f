"""Background jobs (policy re-grades): rows in `jobs`, progress updated as chunks commit."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

CREATE = """
INSERT INTO jobs (id, kind, status, total, policy_version)
VALUES ($1, $2, 'running', (SELECT count(*) FROM customers WHERE policy_version < $3), $3)
"""
PROGRESS = """
UPDATE jobs SET done = least(done + $1, total), changed = changed + $2, updated_at = now()
WHERE status = 'running' AND policy_version <= $3
"""
FINISH = """
UPDATE jobs SET status = 'done', done = total, updated_at = now()
WHERE status = 'running' AND policy_version <= $1
  AND NOT EXISTS (SELECT 1 FROM customers WHERE policy_version < jobs.policy_version)
"""
RUNNING = "SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'running' AND kind = $1)"
GET = "SELECT id, kind, status, total, done, changed, policy_version, error FROM jobs WHERE id = $1"


async def create_regrade_job(conn: asyncpg.Connection, *, version: int) -> uuid.UUID:
    """A job that is done when no customer is graded under a version older than `version`."""
    job_id = uuid.uuid4()
    await conn.execute(CREATE, job_id, "policy_regrade", version)
    return job_id


async def progress(conn: asyncpg.Connection, *, done: int, changed: int, version: int) -> None:
    """Count a committed chunk towards every running job it serves."""
    await conn.execute(PROGRESS, done, changed, version)


async def finish_completed(conn: asyncpg.Connection, *, version: int) -> None:
    """Mark done the running jobs whose customers are all graded under their version."""
    await conn.execute(FINISH, version)


async def regrade_running(conn: asyncpg.Connection) -> bool:
    """Whether a policy re-grade is under way (customers may be under an older version)."""
    return bool(await conn.fetchval(RUNNING, "policy_regrade"))


async def get_job(conn: asyncpg.Connection, job_id: uuid.UUID) -> dict[str, Any] | None:
    """A job as the API shows it."""
    row = await conn.fetchrow(GET, job_id)
    if row is None:
        return None
    return {
        "id": str(row["id"]), "kind": row["kind"], "status": row["status"],
        "total": row["total"], "done": row["done"], "changed": row["changed"],
        "policy_version": row["policy_version"], "error": row["error"],
    }
