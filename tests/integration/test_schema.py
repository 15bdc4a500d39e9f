"""The schema is declared once (shared/db/tables.py): a database migrated to the head has
exactly the tables, columns and indexes declared there."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db.tables import metadata
from tests.support import migrated_database

pytestmark = pytest.mark.integration


async def test_migrations_build_the_declared_schema(pg_url: str) -> None:
    async with migrated_database(pg_url, "schema") as url:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                diff: list[Any] = await conn.run_sync(
                    lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
        finally:
            await engine.dispose()
    # alembic's own version table is the migrations' business, not the schema's.
    assert [d for d in diff if not (d[0] == "remove_table" and d[1].name == "alembic_version")
            ] == []
