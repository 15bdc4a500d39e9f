"""The `tierflow up` supervisor's infrastructure half, with the services left out."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from services.cli.up import Supervisor, UpOptions
from shared.db.engine import make_engine
from shared.settings import CommonSettings
from tests.support import eventually, unique

pytestmark = pytest.mark.integration

KEY = "supervisor-it-key-0123456789"


def topics_settings() -> CommonSettings:
    """Defaults only (no environment): the supervisor starts its own PostgreSQL and broker."""
    return CommonSettings.model_construct(
        topic_events=unique("ev"), topic_tier_changes=unique("tc"), topic_dlq=unique("dlq"),
        events_partitions=2,
    )


def listening(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


async def topic_names(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def scalar(url: str, sql: str) -> object:
    """The first column of the first row, or None for a statement without rows."""
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            result = await conn.exec_driver_sql(sql)
            return result.scalar() if result.returns_rows else None
    finally:
        await engine.dispose()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Outside pytest's temp root: concurrent pytest runs reset that root to mode 0700, which
    locks out the unprivileged user pgserver runs PostgreSQL as when we are root."""
    path = Path(tempfile.mkdtemp(prefix="tierflow-cli-it-"))
    yield path / "tf"
    shutil.rmtree(path, ignore_errors=True)


async def test_embedded_infrastructure_starts_stops_and_keeps_its_data(data_dir: Path) -> None:
    settings = topics_settings()
    options = UpOptions(data_dir=data_dir, services=(), broker_port=0)
    said: list[str] = []
    async with Supervisor(options, settings=settings, out=said.append) as system:
        assert await scalar(system.database_url, "SELECT version_num FROM alembic_version")
        await scalar(system.database_url, "CREATE TABLE survives_restart (n int)")
        assert settings.topic_events in await topic_names(system.bootstrap)
        key_file = options.data_dir / "api-key"
        assert key_file.read_text().strip() == system.api_key
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        bootstrap, first_key = system.bootstrap, system.api_key
    assert not listening(bootstrap)
    assert any("memory only" in line for line in said)
    assert said[-1].startswith("stopped PostgreSQL")

    async with Supervisor(options, settings=settings, out=said.append) as again:
        assert again.api_key == first_key
        assert await scalar(again.database_url, "SELECT count(*) FROM survives_restart") == 0


async def test_configured_infrastructure_and_keys_are_used_as_they_are(
    tmp_path: Path, migrated_pg: str, broker: str
) -> None:
    settings = CommonSettings(
        database_url=SecretStr(migrated_pg), kafka_bootstrap=broker,
        api_keys=SecretStr(orjson.dumps({KEY: ["admin"]}).decode()),
        topic_events=unique("ev"), topic_tier_changes=unique("tc"), topic_dlq=unique("dlq"),
    )
    options = UpOptions(data_dir=tmp_path / "tf", services=())
    said: list[str] = []
    async with Supervisor(options, settings=settings, out=said.append) as system:
        assert (system.database_url, system.bootstrap) == (migrated_pg, broker)
        assert system.api_key == KEY
        assert system.summary().api_key is None  # configured keys are never printed
        assert settings.topic_events in await topic_names(broker)
    assert not (options.data_dir / "api-key").exists()
    assert listening(broker)  # not ours to stop
    assert not any(line.startswith("stopped") for line in said)


async def test_a_dead_broker_or_database_is_started_again_with_the_data_kept(
    data_dir: Path
) -> None:
    settings = topics_settings()
    options = UpOptions(data_dir=data_dir, services=(), broker_port=0)
    said: list[str] = []
    async with Supervisor(options, settings=settings, out=said.append) as system:
        await scalar(system.database_url, "CREATE TABLE survives_a_crash (n int)")
        await scalar(system.database_url, "INSERT INTO survives_a_crash VALUES (7)")
        watching = asyncio.create_task(system.wait())
        try:
            broker_pid = system._broker_server.pid if system._broker_server else None
            assert broker_pid is not None
            os.kill(broker_pid, signal.SIGKILL)

            async def broker_back() -> None:
                assert any("the broker is running again" in line for line in said), said
                assert settings.topic_events in await topic_names(system.bootstrap)

            await eventually(broker_back, timeout=30)
            assert any(line.startswith("the broker exited: starting it again") for line in said)

            postmaster = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
            os.kill(postmaster, signal.SIGKILL)

            async def database_back() -> None:
                assert any("PostgreSQL is running again" in line for line in said), said
                assert await scalar(system.database_url, "SELECT n FROM survives_a_crash") == 7

            await eventually(database_back, timeout=60)
        finally:
            system.stop.request()
            await asyncio.wait_for(watching, 10)
