"""What the command line reads from its environment, in one place, and how it reports errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import TierflowError

ENV_PREFIX = "TIERFLOW_"
KEY_FILE = "api-key"


class CliError(TierflowError):
    """A failure the command line reports in one line and exits on."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(CliError):
    """Ctrl-C (or SIGTERM) arrived before the work was done."""

    def __init__(self) -> None:
        super().__init__("interrupted", exit_code=130)


class ClientSettings(BaseSettings):
    """Defaults for the client commands (send, policy, subscriptions, demo): where the
    servers are, which key."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    ingest_url: str = "http://127.0.0.1:8080"
    grader_url: str = "http://127.0.0.1:8081"
    notifier_url: str = "http://127.0.0.1:8082"
    api_key: SecretStr | None = None
    data_dir: Path = Path(".tierflow")


def child_environ(overrides: Mapping[str, str]) -> dict[str, str]:
    """The environment of a supervised process: ours (PATH, locale, TIERFLOW_*) plus overrides."""
    # The children are separate processes: the environment is how their settings reach them.
    return {**os.environ, "PYTHONUNBUFFERED": "1", **overrides}


def read_api_key(data_dir: Path) -> str | None:
    """The key `tierflow up` saved in the data dir, if any."""
    try:
        text = (data_dir / KEY_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def resolve_key(explicit: str | None, settings: ClientSettings, data_dir: Path | None) -> str:
    """--key, else TIERFLOW_API_KEY, else the key `tierflow up` saved in the data dir."""
    if explicit:
        return explicit
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    saved = read_api_key(data_dir or settings.data_dir)
    if saved:
        return saved
    raise CliError(
        "no API key: pass --key, set TIERFLOW_API_KEY, or run `tierflow up` "
        f"(it saves one in {(data_dir or settings.data_dir) / KEY_FILE})", exit_code=2
    )
