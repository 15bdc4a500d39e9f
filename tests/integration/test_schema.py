"""The schema is declared once (shared/db/tables.py): a database migrated to the head has
exactly the tables, columns and indexes declared there."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import String
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db.engine import asyncpg_dsn
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



async def test_text_columns_have_the_declared_collation(pg_url: str) -> None:
    # (compare_metadata does not compare collations.) None: the database's default.
    declared = {(table.name, column.name): column.type.collation
                for table in metadata.tables.values() for column in table.columns
                if isinstance(column.type, String)}
    async with migrated_database(pg_url, "collation") as url:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            rows = await conn.fetch(
                "SELECT table_name, column_name, collation_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND data_type = 'text' "
                "AND table_name <> 'alembic_version'")
        finally:
            await conn.close()
    assert {(r[0], r[1]): r[2] for r in rows} == declared
    assert declared[("customers", "customer_id")] == "C"
