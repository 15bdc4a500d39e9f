"""The keys `tierflow up` creates when none is configured (the admin API key, the webhook
secrets key), kept in the data directory so a restart reuses them."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import orjson
from cryptography.fernet import Fernet

from services.cli.config import KEY_FILE, read_api_key
from shared.settings import parse_api_keys

WEBHOOK_KEY_FILE = "webhook-key"


def ensure_api_key(data_dir: Path) -> tuple[str, bool]:
    """The saved key, or a new one written with mode 0600; returns (key, created)."""
    path = data_dir / KEY_FILE
    saved = read_api_key(data_dir)
    if saved is not None:
        # Tighten a file someone loosened by hand: it grants admin.
        path.chmod(0o600)
        return saved, False
    return _write_secret(path, secrets.token_urlsafe(24)), True


def ensure_webhook_key(data_dir: Path) -> tuple[str, bool]:
    """The saved webhook secrets key (a Fernet key), or a new one; returns (key, created)."""
    path = data_dir / WEBHOOK_KEY_FILE
    if path.is_file() and (saved := path.read_text(encoding="utf-8").strip()):
        path.chmod(0o600)  # it decrypts every webhook secret
        return saved, False
    return _write_secret(path, Fernet.generate_key().decode()), True


def _write_secret(path: Path, key: str) -> str:
    """Write `key` to a file created with mode 0600."""
    data_dir = path.parent
    data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # an empty leftover would make O_EXCL fail
    # Created with 0600 from the start, so the key is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key + "\n")
    return key


def keys_document(key: str) -> str:
    """`TIERFLOW_API_KEYS` granting `key` the admin scope."""
    return orjson.dumps({key: ["admin"]}).decode()


def first_admin_key(raw_keys: str) -> str | None:
    """A configured key with the admin scope (the demo needs one), or None."""
    for key, scopes in parse_api_keys(raw_keys).items():
        if "admin" in scopes:
            return key
    return None
