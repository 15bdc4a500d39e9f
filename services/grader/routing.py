"""Which partition owns a customer: the one Kafka's default partitioner picks for the key."""

from __future__ import annotations

from functools import lru_cache

from shared.kafka import key_partition


@lru_cache(maxsize=1 << 16)
def owner_partition(customer_id: str, partitions: int) -> int:
    """murmur2 of the UTF-8 key (see `shared.kafka.key_partition`), memoised."""
    return key_partition(customer_id.encode(), partitions)
