"""Where the committed state left off in each partition this consumer holds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiokafka import TopicPartition

from services.grader.repository import OffsetAdvance


class Positions:
    """Per held partition: the stored next offset (the fence for the next commit) and the
    broker cluster it was read on."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._at: dict[TopicPartition, tuple[int, str | None]] = {}

    def held(self) -> set[TopicPartition]:
        """Partitions with a known position."""
        return set(self._at)

    def get(self, tp: TopicPartition) -> int | None:
        """The stored next offset of a held partition."""
        found = self._at.get(tp)
        return found[0] if found else None

    def assign(self, tp: TopicPartition, offset: int, cluster_id: str | None) -> None:
        """A partition (re)positioned from the stored state."""
        self._at[tp] = (offset, cluster_id)

    def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions handed to another consumer."""
        for tp in partitions:
            self._at.pop(tp, None)

    def clear(self) -> None:
        """Nothing is held (the consumer stopped)."""
        self._at.clear()

    def advances(self, next_offsets: Mapping[int, int]) -> list[OffsetAdvance]:
        """For each partition read since the last commit: from the stored position to the
        next offset to read."""
        out = []
        for partition, offset in sorted(next_offsets.items()):
            expected, cluster_id = self._at[TopicPartition(self.topic, partition)]
            out.append(OffsetAdvance(partition, expected, offset, cluster_id))
        return out

    def committed(self, advances: Iterable[OffsetAdvance]) -> None:
        """Record committed positions."""
        for a in advances:
            self._at[TopicPartition(self.topic, a.partition)] = (a.new, a.cluster_id)
