"""Kafka clients with every safety-relevant setting spelled out (aiokafka's defaults are unsafe)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.partitioner import murmur2

from shared.settings import CommonSettings

log = logging.getLogger(__name__)


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for `key`: murmur2, as the Java client
    and aiokafka do (librdkafka-based clients need `partitioner=murmur2_random` to agree)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


def make_producer(settings: CommonSettings, *, client_id: str) -> AIOKafkaProducer:
    """acks=all so a 2xx means the broker has it; no idempotence (refused by Tansu, so
    producer retries may duplicate, which the grader's event_id dedupe absorbs)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        max_batch_size=256 * 1024,
        request_timeout_ms=10_000,
        retry_backoff_ms=100,
    )


def make_consumer(
    settings: CommonSettings, *, group_id: str | None, client_id: str
) -> AIOKafkaConsumer:
    """Offsets are ours to manage (stored in PostgreSQL), so no auto-commit, and no
    silent jump to either end when a position is missing or out of range: the grader
    decides what that means (see services/grader/worker.py)."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="none",
        isolation_level="read_committed",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=max(settings.kafka_session_timeout_ms // 5, 500),
        max_poll_interval_ms=300_000,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )


def wanted_topics(settings: CommonSettings) -> list[NewTopic]:
    """The topics tierflow uses, with the partition counts the contract names."""
    # Tansu reports only configs set explicitly; some clients need retention.ms present.
    configs = {"retention.ms": "-1"}
    return [
        NewTopic(settings.topic_events, settings.events_partitions, 1, topic_configs=configs),
        NewTopic(settings.topic_tier_changes, settings.events_partitions, 1, topic_configs=configs),
        NewTopic(settings.topic_dlq, 1, 1, topic_configs=configs),
    ]


async def ensure_topics(settings: CommonSettings, topics: Iterable[NewTopic] | None = None) -> None:
    """Create the topics if missing; an existing topic is left as it is."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:  # closed even when start() fails or is cancelled half-way
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [t for t in (topics or wanted_topics(settings)) if t.name not in existing]
        if missing:
            # Errors come back per topic in the response, not as exceptions.
            response = await admin.create_topics(missing)
            for topic, code, message in response.topic_errors:
                if code and for_code(code) is not TopicAlreadyExistsError:
                    raise for_code(code)(f"{topic}: {message}")
    finally:
        await admin.close()


async def cluster_id(settings: CommonSettings) -> str | None:
    """The broker cluster's id (Metadata v2+), or None when it reports none."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        await admin.start()
        described = await admin.describe_cluster()
    finally:
        await admin.close()
    found = described.get("cluster_id")
    return str(found) if found else None
