"""One validated settings object per process, read from `TIERFLOW_*` variables or `.env`."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Literal

import orjson
from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

SCOPES = frozenset({"events:write", "tiers:read", "admin"})
# The stand-ins deploy/env.example and the docs show for secrets: a copy left unfilled
# must not start with them (it would run with keys anyone can read).
PLACEHOLDER = re.compile(r"replace-with|change-?me|a-long-random-key", re.IGNORECASE)
GENERATE_KEY = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
GENERATE_FERNET = ('python3 -c "from cryptography.fernet import Fernet;'
                   ' print(Fernet.generate_key().decode())"')


class CommonSettings(BaseSettings):
    """What every process needs: where the broker and database are, topics, keys."""

    model_config = SettingsConfigDict(
        env_prefix="TIERFLOW_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: SecretStr = SecretStr(
        "postgresql+asyncpg://tierflow:tierflow@localhost:5432/tierflow"
    )
    kafka_bootstrap: str = "localhost:9092"
    topic_events: str = "customer-events"
    topic_tier_changes: str = "tier-changes"
    topic_dlq: str = "customer-events.dlq"
    events_partitions: int = Field(default=12, ge=1, le=10_000)
    # Kept short so Tansu (which answers a group join after ~half of it) starts quickly.
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000)
    # How long the broker may hold a fetch when no data is there. Apache Kafka answers as
    # soon as data arrives, whatever this is; Tansu 0.6 holds it for the whole time, which
    # at 500 ms (aiokafka's default) added ~250 ms to every event's latency.
    kafka_fetch_max_wait_ms: int = Field(default=10, ge=1, le=10_000)
    # Database waits (see docs/operations.md#database-connections): connecting; any one
    # command on a service's connections (also the server's statement_timeout); and how
    # long a silent peer may stay unanswered before either side drops the connection.
    db_connect_timeout_s: float = Field(default=10.0, gt=0, le=300)
    db_query_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    db_dead_peer_s: int = Field(default=30, ge=2, le=3600)
    api_keys: SecretStr = SecretStr("{}")
    base_currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    host: str = "127.0.0.1"
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _asyncpg_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if not url.startswith("postgresql+asyncpg://"):
            raise ValueError("must start with postgresql+asyncpg://")
        try:
            password = make_url(url).password or ""
        except (ArgumentError, ValueError):
            raise ValueError("is not a database URL (postgresql+asyncpg://user:password@"
                             "host:port/database)") from None
        if PLACEHOLDER.search(password):
            raise ValueError("its password is a placeholder (POSTGRES_PASSWORD in"
                             " deploy/env.example): set the database's real password")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for part in value.split(","):
            host, _, port = part.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{part!r} is not host:port")
        return value

    @field_validator("api_keys")
    @classmethod
    def _api_keys(cls, value: SecretStr) -> SecretStr:
        parse_api_keys(value.get_secret_value())
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        # Checked here, not when logging starts: the names both logging and uvicorn know.
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    def key_scopes(self) -> dict[str, frozenset[str]]:
        """Scopes by sha256 of the key, so raw keys are not kept around in dicts."""
        keys = parse_api_keys(self.api_keys.get_secret_value())
        return {hashlib.sha256(k.encode()).hexdigest(): v for k, v in keys.items()}


def parse_api_keys(raw: str) -> dict[str, frozenset[str]]:
    """Parse `{"key": ["scope", ...]}`; the error never repeats a key."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError("must be a JSON object mapping each key to a list of scopes") from None
    if not isinstance(doc, dict):
        raise ValueError("must be a JSON object mapping each key to a list of scopes")
    keys: dict[str, frozenset[str]] = {}
    for number, (key, scopes) in enumerate(doc.items(), start=1):
        if not isinstance(scopes, list) or not scopes or not set(scopes) <= SCOPES:
            raise ValueError(f"key #{number}: scopes must be a non-empty list of {sorted(SCOPES)}")
        if len(key) < 16:
            raise ValueError(f"key #{number}: keys must be at least 16 characters")
        if PLACEHOLDER.search(key):
            raise ValueError(f"key #{number} is a placeholder from deploy/env.example or the"
                             f" docs: generate a real key with {GENERATE_KEY}")
        keys[key] = frozenset(scopes)
    return keys


class IngestSettings(CommonSettings):
    """Settings of the ingest process."""

    ingest_port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_batch_events: int = Field(default=1000, ge=1)
    max_future_seconds: int = Field(default=300, ge=0)
    produce_timeout_s: float = Field(default=10.0, gt=0)


class GraderSettings(CommonSettings):
    """Settings of the grader process."""

    grader_port: int = Field(default=8081, ge=0, le=65535)
    # api: lookups, stats, policy; consumer: one consume loop (health and metrics only);
    # all: both in one process (tests, small installs).
    grader_role: Literal["all", "api", "consumer"] = "all"
    # How many consumer processes `tierflow up` starts, and the port of the first (their
    # health and metrics; the next ones count up from it).
    grader_consumers: int = Field(default=2, ge=1, le=64)
    grader_consumer_port: int = Field(default=8091, ge=1, le=65535)
    # Worker processes serving the API (role `api`), sharing its port.
    grader_api_workers: int = Field(default=1, ge=1, le=64)
    consumer_group: str = "tierflow-grader"
    batch_max_events: int = Field(default=5000, ge=1)
    batch_timeout_ms: int = Field(default=20, ge=1)
    # While behind, a checkpoint gathers up to this many events or this many ms.
    checkpoint_max_events: int = Field(default=100_000, ge=1)
    checkpoint_max_ms: int = Field(default=2_000, ge=1)
    # Memory for customer state held by one consumer process (estimated; see docs).
    state_memory_mb: int = Field(default=512, ge=1)
    dedupe_days: int = Field(default=30, ge=1, le=3650)
    max_future_seconds: int = Field(default=300, ge=0)
    regrade_chunk: int = Field(default=4000, ge=1)
    # Worker processes grading everyone for `POST /v1/policy/simulate` (0: one per core).
    simulate_workers: int = Field(default=0, ge=0, le=64)
    # How long an override or erasure request waits for the customer's owner to apply it
    # before answering 202 (it is applied anyway, when the owner gets to it).
    write_wait_seconds: float = Field(default=10.0, ge=0, le=300)
    # Any one command of a consume loop (a checkpoint's COPY and commit, loading a
    # partition's customers, a re-grade chunk): longer than the API's queries may take.
    db_consumer_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    db_pool_size: int = Field(default=5, ge=1)


class NotifierSettings(CommonSettings):
    """Settings of the notifier process."""

    notifier_port: int = Field(default=8082, ge=0, le=65535)
    relay_batch: int = Field(default=1000, ge=1)
    relay_idle_ms: int = Field(default=100, ge=1)
    produce_timeout_s: float = Field(default=10.0, gt=0)
    # The relay leader's session lease: PostgreSQL ends the leader's session once it has
    # been silent this long (its lock then passes to another notifier); the leader
    # queries at least every quarter of it.
    relay_lease_s: float = Field(default=15.0, ge=1, le=3600)
    # Fernet keys (comma-separated; the first encrypts) for the webhook signing secrets.
    # Without one the notifier relays to the topic but cannot create subscriptions.
    webhook_secrets_key: SecretStr | None = None
    # Networks webhooks may reach although they are not public (`tierflow up` allows
    # loopback): comma-separated CIDRs. Everything else non-public is refused.
    webhook_allowed_networks: str = ""
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=60)
    # Attempts in flight per subscription (each subscription has its own connections).
    webhook_concurrency: int = Field(default=32, ge=1, le=1000)
    # How often a subscription looks for retries that came due (new deliveries wake it).
    webhook_poll_ms: int = Field(default=1000, ge=10)

    @field_validator("webhook_secrets_key")
    @classmethod
    def _webhook_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for number, part in enumerate(value.get_secret_value().split(","), start=1):
                if PLACEHOLDER.search(part):
                    raise ValueError(f"key #{number} is a placeholder from deploy/env.example:"
                                     f" generate a Fernet key with {GENERATE_FERNET}")
                try:
                    Fernet(part.strip().encode())
                except ValueError:
                    raise ValueError(
                        f"key #{number} is not a Fernet key (32 url-safe base64-encoded bytes)"
                    ) from None
        return value

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"{part!r} is not a network (e.g. 10.0.0.0/8)") from None
        return value


def settings_problems(exc: ValidationError) -> list[str]:
    """`invalid setting TIERFLOW_…: reason`, one per bad variable, named as it is set; the
    value is never repeated (it may be a key). Every process and the CLI report these."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        name = "TIERFLOW_" + "_".join(str(p) for p in err["loc"]).upper()
        lines.append(f"invalid setting {name}: {err['msg'].removeprefix('Value error, ')}")
    return lines
