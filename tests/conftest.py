"""Session fixtures: one real PostgreSQL and one real Kafka-protocol broker for the run.

External servers are used when TIERFLOW_DATABASE_URL / TIERFLOW_KAFKA_BOOTSTRAP are set.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import make_engine
from shared.db.migrate import upgrade
from shared.embedded import EmbeddedBroker, EmbeddedPostgres


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL server for the whole run."""
    external = os.environ.get("TIERFLOW_DATABASE_URL")
    if external:
        yield external
        return
    # Not under pytest's tmp_path: as root, pgserver runs PostgreSQL as an unprivileged
    # user, and each pytest session makes /tmp/pytest-of-root private again.
    root = Path(tempfile.mkdtemp(prefix="tierflow-test-pg-"))
    root.chmod(0o755)
    server = EmbeddedPostgres(root / "data")
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def migrated_pg(pg_url: str) -> str:
    """The same server with the schema at head."""
    await upgrade(pg_url)
    return pg_url


@pytest.fixture(scope="session")
async def engine(migrated_pg: str) -> AsyncIterator[AsyncEngine]:
    """A pool for tests that read or write the database directly."""
    eng = make_engine(migrated_pg)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Kafka-protocol broker for the whole run; its bootstrap address."""
    external = os.environ.get("TIERFLOW_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    server = EmbeddedBroker(log_path=Path(tmp_path_factory.mktemp("broker")) / "tansu.log")
    bootstrap = server.start()
    try:
        yield bootstrap
    finally:
        server.stop()
