"""Which partition owns a customer: the one Kafka's default partitioner picks for the key."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=1 << 16)
def owner_partition(customer_id: str, partitions: int) -> int:
    """murmur2 of the UTF-8 key, as the Java client and aiokafka's default partitioner do
    (librdkafka-based clients need `partitioner=murmur2_random` to agree)."""
    hashed: int = murmur2(customer_id.encode())
    return (hashed & 0x7FFFFFFF) % partitions
