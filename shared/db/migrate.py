"""Run the Alembic migrations programmatically: `tierflow migrate` and the test fixtures."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from shared.db.engine import make_engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade(url: str) -> None:
    """Create or upgrade the schema to the newest revision."""
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            # Two processes migrating at once would race on DDL: serialize them.
            await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(774411)")
            await conn.run_sync(_upgrade)
    finally:
        await engine.dispose()


def upgrade_sync(url: str) -> None:
    """Blocking wrapper for the CLI."""
    asyncio.run(upgrade(url))
