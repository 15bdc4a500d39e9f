"""Where the committed state left off in each partition this consumer holds."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import ConsumerRecord, TopicPartition

from services.grader.repository import OffsetAdvance


class Positions:
    """Per held partition: the stored next offset (the fence for the next commit) and the
    broker cluster it was read on. Rebalances bump `generation`, so a batch that was in
    flight across one does not write its positions over the new assignment's."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.generation = 0
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
        self.generation += 1

    def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions handed to another consumer."""
        for tp in partitions:
            self._at.pop(tp, None)
        self.generation += 1

    def clear(self) -> None:
        """Nothing is held (the consumer stopped)."""
        self._at.clear()
        self.generation += 1

    def advances(self, records: Iterable[ConsumerRecord]) -> list[OffsetAdvance]:
        """For each partition in the batch: from the stored position to past its last record."""
        last: dict[int, int] = {}
        for record in records:
            last[record.partition] = max(last.get(record.partition, -1), record.offset)
        out = []
        for partition, offset in sorted(last.items()):
            expected, cluster_id = self._at[TopicPartition(self.topic, partition)]
            out.append(OffsetAdvance(partition, expected, offset + 1, cluster_id))
        return out

    def committed(self, advances: Iterable[OffsetAdvance], *, generation: int) -> bool:
        """Record committed positions, unless a rebalance happened since `generation`."""
        if generation != self.generation:
            return False
        for a in advances:
            self._at[TopicPartition(self.topic, a.partition)] = (a.new, a.cluster_id)
        return True
