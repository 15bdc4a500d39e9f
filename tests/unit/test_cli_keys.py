"""The admin key `tierflow up` creates: private, persisted, reused."""

from __future__ import annotations

import stat
from pathlib import Path

from services.cli.keys import ensure_api_key, first_admin_key, keys_document
from shared.settings import parse_api_keys


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_key_is_created_private(tmp_path: Path) -> None:
    key, created = ensure_api_key(tmp_path / "data")
    assert created
    path = tmp_path / "data" / "api-key"
    assert path.read_text().strip() == key
    assert mode(path) == 0o600
    assert parse_api_keys(keys_document(key)) == {key: frozenset({"admin"})}


def test_a_restart_reuses_the_key(tmp_path: Path) -> None:
    first, _ = ensure_api_key(tmp_path)
    again, created = ensure_api_key(tmp_path)
    assert (again, created) == (first, False)


def test_a_loosened_key_file_is_tightened(tmp_path: Path) -> None:
    ensure_api_key(tmp_path)
    (tmp_path / "api-key").chmod(0o644)
    ensure_api_key(tmp_path)
    assert mode(tmp_path / "api-key") == 0o600


def test_an_empty_key_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "api-key").write_text("\n")
    key, created = ensure_api_key(tmp_path)
    assert created
    assert len(key) >= 16


def test_first_admin_key() -> None:
    raw = '{"reader-0123456789abcdef": ["tiers:read"], "admin-0123456789abcdef": ["admin"]}'
    assert first_admin_key(raw) == "admin-0123456789abcdef"
    assert first_admin_key('{"reader-0123456789abcdef": ["tiers:read"]}') is None
