"""A Kafka consumer and a batch processor in memory for the loop's unit tests (consumer/loop.py): partitions as lists
of keys, one timeline of applies and commits shared by both."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Collection, Sequence

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from consumer.results import BatchResult, Prepared, offsets_after
from models.records import Decoded, Record

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

    def paused(self) -> set[TopicPartition]:
        return set(self.stopped)

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

    def highwater(self, tp: TopicPartition) -> int | None:
        """The offset after the partition's last record, as a broker's fetch responses report it."""
        return len(self.logs[tp])

    async def position(self, tp: TopicPartition) -> int:
        return self.position_of[tp]

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.timeline += [("commit", tp.partition, meta.offset) for tp, meta in offsets.items()]


class MemoryProcessor:
    """What the loop asks of a batch processor: applies every record (onto the timeline), after failing the first
    ``failures`` applies with ``error``; parks nothing."""

    def __init__(self, timeline: list[Event], failures: int = 0, error: Exception | None = None) -> None:
        self.timeline = timeline
        self.failures = failures
        self.error = error or ConnectionError("database away")
        self.applies = 0

    async def prepare(self, records: Sequence[Record]) -> Prepared:
        decoded = [Decoded(r, "0" * 64, None, "BookingApproved", (r.key or b"").decode(), "applied") for r in records]
        return Prepared(records, 0, decoded, 0.0, 0.0)

    async def apply(self, batch: Prepared, sent: Callable[[], None] | None = None) -> BatchResult:
        if sent is not None:
            sent()  # as BatchProcessor does when its transactions send their first statements
        self.applies += 1
        if self.applies <= self.failures:
            raise self.error
        self.timeline += [("apply", r.partition, r.offset) for r in batch.records]
        n = len(batch.records)
        return BatchResult(n, n, 0, 0, Counter(), 0, 0, next_offsets=offsets_after(batch.records))

    async def locked(self, booking_ids: Collection[str]) -> set[str]:
        return set()

    def release(self, booking_ids: Collection[str]) -> None:
        pass
