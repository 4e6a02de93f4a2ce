"""What users feel: a booking event produced -> its ``SessionCreated`` readable on the output topic.

A real consumer of the output topic (``CreatedWatch``), in the bench process, notes when each booking's
``SessionCreated`` first arrives; the producers here note when each booking's first event was sent. Both on the
monotonic clock of this one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from bench.produce import Progress
from bench.workload import BenchRecord

# The watcher's own fetch wait: how long the broker may hold its fetch when nothing is there. A broker that answers
# a waiting fetch as soon as a record arrives (Kafka) makes it irrelevant; one that holds it for the whole wait
# (Tansu) adds up to this much to each figure, the watcher's delay, not the service's. Short for the idle path,
# where the cores are free; longer under load, where polling every 5 ms would cost the bench and the broker about
# a fifth of a core (measured on Tansu: 12% and 9%; at 20 ms, 4% and 5%) that the service is measured without.
IDLE_FETCH_WAIT_MS = 5
BUSY_FETCH_WAIT_MS = 20
_CREATED = b'"type":"SessionCreated"'


class CreatedWatch:
    """Reads ``topic`` from its beginning (assigned, no group: no join delay) and notes, per booking id (the
    record key, CONTRACT "Topics"), when its first ``SessionCreated`` was read."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, *, fetch_wait_ms: int) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=fetch_wait_ms,
            client_id="bench-video-service",
        )
        self._partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self._task: asyncio.Task[None] | None = None
        self.seen_at: dict[str, float] = {}
        self._changed = asyncio.Event()

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        self._task = asyncio.create_task(self._read(), name="created-watch")

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=1000)
            now = time.monotonic()
            for records in batch.values():
                for r in records:
                    if r.key is not None and r.value is not None and _CREATED in r.value:
                        self.seen_at.setdefault(r.key.decode(), now)
            if batch:
                self._changed.set()

    async def until(self, count: int, timeout_s: float) -> bool:
        """Wait until ``count`` SessionCreated were read; False if not within ``timeout_s`` (or the reader died)."""
        deadline = time.monotonic() + timeout_s
        while len(self.seen_at) < count:
            left = deadline - time.monotonic()
            if left <= 0 or self._task is None or self._task.done():
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(left, 1.0))
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            if not self._task.cancelled() and self._task.exception() is not None:
                raise self._task.exception()  # type: ignore[misc]
        await self._consumer.stop()


@dataclass
class Trickled:
    """What the one-at-a-time producer sent: per booking, the send time of its (first) event; per record, how
    long the broker took to acknowledge it, and where it landed."""

    sent_at: dict[str, float] = field(default_factory=dict)
    ack_s: list[float] = field(default_factory=list)
    by_offset: dict[int, dict[int, float]] = field(default_factory=dict)  # partition -> offset -> send time
    ends: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0


async def produce_trickle(
    bootstrap: str, topic: str, records: Sequence[BenchRecord], rate_per_s: float, progress: Progress
) -> Trickled:
    """Each record alone, at ``rate_per_s``: sent, and its acknowledgement awaited, before the next is due. An
    upstream service publishing one booking at a time as users book (acks=all, no linger)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", client_id="bench-upstream-trickle")
    await producer.start()
    out = Trickled()
    try:
        started = time.monotonic()
        for i, r in enumerate(records):
            due = started + i / rate_per_s
            if (wait_s := due - time.monotonic()) > 0:
                await asyncio.sleep(wait_s)
            sent = time.monotonic()
            metadata = await producer.send_and_wait(topic, r.value, key=r.key)
            out.ack_s.append(time.monotonic() - sent)
            out.sent_at.setdefault(r.key.decode(), sent)
            out.by_offset.setdefault(metadata.partition, {})[metadata.offset] = sent
            out.ends[metadata.partition] = max(out.ends.get(metadata.partition, 0), metadata.offset + 1)
            progress(1)
        out.seconds = time.monotonic() - started
    finally:
        await producer.stop()
    return out


def creating_records(records: Sequence[BenchRecord], count: int) -> list[BenchRecord]:
    """The first record of each of ``count`` bookings, in stream order: each creates its session, so each is
    followed by one ``SessionCreated``."""
    firsts: dict[int, BenchRecord] = {}
    for r in records:
        firsts.setdefault(r.booking, r)
    return list(firsts.values())[:count]


def filling_records(records: Sequence[BenchRecord], partitions: int, per_partition: int) -> list[BenchRecord]:
    """Creating records (``creating_records``) until each of ``partitions`` has ``per_partition`` of them, placed by
    the producer's default partitioner (murmur2 of the key), in stream order; the partitions still short
    when ``records`` run out get fewer. The input record and its ``SessionCreated`` share a key, hence a partition
    number (CONTRACT "Topics"): both topics are filled alike."""
    every = list(range(partitions))
    place = DefaultPartitioner()
    wanted = dict.fromkeys(every, per_partition)
    chosen: list[BenchRecord] = []
    for r in creating_records(records, len(records)):
        partition = place(r.key, every, every)
        if wanted[partition] > 0:
            wanted[partition] -= 1
            chosen.append(r)
            if not any(wanted.values()):
                break
    return chosen
