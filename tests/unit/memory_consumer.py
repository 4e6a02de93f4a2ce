"""A Kafka consumer in memory for the loop's unit tests (consumer/loop.py): partitions as lists of keys, one timeline
of applies and commits shared with the test's processor."""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata

TOPIC = "booking.events"
Event = tuple[str, int, int]  # ("apply" | "commit", partition, offset)


class MemoryConsumer:
    """Just what the loop calls: positions, pause and resume, seek, getmany in partition order, commits."""

    def __init__(self, logs: dict[TopicPartition, list[str]], timeline: list[Event]) -> None:
        self.logs = logs
        self.position_of = dict.fromkeys(logs, 0)
        self.stopped: set[TopicPartition] = set()
        self.timeline = timeline

    def assignment(self) -> set[TopicPartition]:
        return set(self.logs)

    def pause(self, *tps: TopicPartition) -> None:
        self.stopped |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.stopped -= set(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position_of[tp] = offset

    async def getmany(
        self, *, timeout_ms: int, max_records: int = 1000
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        out: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        room = max_records
        for tp in sorted(self.logs):
            start = self.position_of[tp]
            keys = self.logs[tp][start : start + room] if tp not in self.stopped else []
            if keys:
                out[tp] = [
                    ConsumerRecord(TOPIC, tp.partition, start + i, 0, 0, k.encode(), b"{}", None, 1, 2, ())
                    for i, k in enumerate(keys)
                ]
                self.position_of[tp] += len(keys)
                room -= len(keys)
        # A fetch is a round trip (the batch in hand goes on meanwhile) of records taken from where the partition
        # stood when it began; an empty fetch waits, as the broker's would.
        await asyncio.sleep(0.001 if out else min(timeout_ms, 5) / 1000)
        return out

    async def position(self, tp: TopicPartition) -> int:
        return self.position_of[tp]

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.timeline += [("commit", tp.partition, meta.offset) for tp, meta in offsets.items()]
