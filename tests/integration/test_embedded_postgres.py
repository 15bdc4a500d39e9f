"""The embedded PostgreSQL lets in only who has its password: a generated one, kept 0600
in the data directory; its socket is in a private directory; the directories above the
data are made searchable for the server's user at most, never listable."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from shared.db.engine import asyncpg_dsn
from shared.embedded import (
    PASSWORD_FILE,
    TUNING,
    EmbeddedPostgres,
    _bin,
    _let_search,
    _run,
    _server_user,
    memory_bytes,
    shared_buffers_mb,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def root() -> Iterator[Path]:
    """A private directory (0700) to hold a data directory, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="tierflow-test-embedded-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def with_password(url: str, password: str | None) -> str:
    """The URL with another password, or none (`set` cannot remove one)."""
    return asyncpg_dsn(make_url(url)._replace(password=password).render_as_string(False))


async def assert_only_the_password_gets_in(url: str) -> None:
    for password in (None, "", "wrong-password"):
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(with_password(url, password))
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


def socket_dir(url: str) -> Path:
    host = make_url(url).query["host"]
    assert isinstance(host, str)
    return Path(host)


async def test_a_new_server_needs_its_password_kept_0600(root: Path) -> None:
    before = root.stat().st_mode
    server = EmbeddedPostgres(root / "pg")
    url = server.start()
    try:
        await assert_only_the_password_gets_in(url)
        secret = root / "pg" / PASSWORD_FILE
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert secret.read_text().strip() == make_url(url).password
        user = _server_user()
        assert secret.stat().st_uid == (os.geteuid() if user is None else user.pw_uid)
        assert socket_dir(url) == root / "pg"
        assert stat.S_IMODE((root / "pg").stat().st_mode) == 0o700
        # Above the data: at most searchable by others (as root, for the server's user).
        opened = root.stat().st_mode & ~before
        assert opened in (0, stat.S_IXOTH)
        assert not root.stat().st_mode & stat.S_IROTH
    finally:
        server.stop()


async def test_a_long_data_path_gets_a_private_socket_directory(root: Path) -> None:
    server = EmbeddedPostgres(root / ("d" * 100))
    url = server.start()
    try:
        where = socket_dir(url)
        assert where != root / ("d" * 100)
        assert stat.S_IMODE(where.stat().st_mode) == 0o700
        await assert_only_the_password_gets_in(url)
    finally:
        server.stop()
    assert not where.exists()


async def test_a_data_directory_from_before_passwords_is_secured(root: Path) -> None:
    """What older versions made (initdb with trust auth) keeps its data and gets a
    password."""
    data = root / "pg"
    data.mkdir(mode=0o700)
    user = _server_user()
    if user is not None:
        os.chown(data, user.pw_uid, user.pw_gid)
        _let_search(root, user)
    _run([_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"], user, cwd=data)
    _run([_bin("postgres"), "--single", "-D", str(data), "postgres"], user, cwd=data,
         stdin=b"CREATE TABLE kept (x int); INSERT INTO kept VALUES (7);\n")
    server = EmbeddedPostgres(data)
    url = server.start()
    try:
        await assert_only_the_password_gets_in(url)
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            assert await conn.fetchval("SELECT x FROM kept") == 7
        finally:
            await conn.close()
        assert stat.S_IMODE((data / PASSWORD_FILE).stat().st_mode) == 0o600
        assert "trust" not in (data / "pg_hba.conf").read_text()
    finally:
        server.stop()


def test_shared_buffers_are_a_quarter_of_memory_within_bounds() -> None:
    gib = 2**30
    assert shared_buffers_mb(24 * gib) == 6 * 1024
    assert shared_buffers_mb(256 * gib) == 8 * 1024
    assert shared_buffers_mb(gib // 4) == 128
    assert 128 <= shared_buffers_mb(memory_bytes()) <= 8192


async def test_the_session_server_is_tuned_for_this_machine(pg_url: str) -> None:
    if os.environ.get("TIERFLOW_DATABASE_URL"):
        pytest.skip("an external server: its tuning is its owner's")
    conn = await asyncpg.connect(asyncpg_dsn(pg_url))
    try:
        blocks = await conn.fetchval(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers'")
        assert blocks * 8192 == shared_buffers_mb(memory_bytes()) * 2**20
        assert await conn.fetchval("SHOW max_wal_size") == TUNING["max_wal_size"]
    finally:
        await conn.close()

