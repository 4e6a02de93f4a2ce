"""Putting the workload on the broker: fast bulk production, and paced production for the latency stage.

End offsets are not trusted (Tansu reports them too low after a multi-record batch): what was produced is known
from the send metadata, as the next offset per partition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from bench.workload import BenchRecord
from producer.publish import PartitionBatches, SentBatch

Ends = dict[int, int]  # partition -> next offset after the last produced record
Progress = Callable[[int], None]  # records just done

_BATCH_BYTES = 128 * 1024
_IN_FLIGHT_BATCHES = 64
_TICK_MS = 5  # the paced producer's linger


def _producer(bootstrap: str, **options: Any) -> AIOKafkaProducer:
    # acks=all as the upstream producer does; not idempotent (Tansu refuses it, and offsets come from metadata).
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", client_id="bench-upstream", **options)


def add_end(ends: Ends, partition: int, next_offset: int) -> None:
    ends[partition] = max(ends.get(partition, 0), next_offset)


async def produce_bulk(
    bootstrap: str, topic: str, records: Sequence[BenchRecord], partitions: int, progress: Progress
) -> Ends:
    """Every record, keyed by booking id, partitioned as any Kafka client would (murmur2 of the key)."""
    producer = _producer(bootstrap, max_batch_size=_BATCH_BYTES, linger_ms=5)
    await producer.start()
    partitioner = DefaultPartitioner()
    every = list(range(partitions))
    ends: Ends = {}
    pending: list[SentBatch] = []

    async def settle(keep: int) -> None:
        while len(pending) > keep:
            sent = pending.pop(0)
            metadata = await sent.ack
            add_end(ends, sent.partition, metadata.offset + sent.records)
            progress(sent.records)

    try:
        batches = PartitionBatches(producer)
        for r in records:
            full = await batches.add(topic, partitioner(r.key, every, every), r.key, r.value)
            if full is not None:
                pending.append(full)
                await settle(_IN_FLIGHT_BATCHES)
        pending += await batches.flush()
        await settle(0)
    finally:
        await producer.stop()
    return ends


@dataclass
class Paced:
    """What the paced producer sent: the send time of every record, by (partition, offset)."""

    sent_at: dict[int, dict[int, float]] = field(default_factory=dict)
    ends: Ends = field(default_factory=dict)
    seconds: float = 0.0
    started: float = 0.0  # monotonic: record i was due at started + i / rate
    placed: dict[int, tuple[int, int]] = field(default_factory=dict)  # record i -> (partition, offset)

    @property
    def records(self) -> int:
        return sum(len(offsets) for offsets in self.sent_at.values())


async def produce_paced(
    bootstrap: str,
    topic: str,
    records: Sequence[BenchRecord],
    rate_per_s: float,
    progress: Progress,
    on_start: Callable[[], None] | None = None,
) -> Paced:
    """Records at a steady rate, as an upstream producer with ``linger_ms=5`` sends them: every 5 ms, the records
    due by then, one batch per partition. Built as batches here rather than with one ``send()`` each, which
    would cost the bench about 20 µs of CPU per record on the very cores the service is measured on. A record's
    send time is when it was due, on the monotonic clock every process here shares: the time it waited in
    this producer counts against the service, as a producer's linger would. ``on_start`` is called just before the
    first record is due, once the records are placed (the stage's CPU is counted from there)."""
    producer = _producer(bootstrap, linger_ms=_TICK_MS)
    await producer.start()
    paced = Paced()
    sends: list[tuple[SentBatch, list[int]]] = []  # each batch with the indexes of its records
    try:
        every = sorted(await producer.partitions_for(topic))
        partitioner = DefaultPartitioner()
        owners = [partitioner(r.key, every, every) for r in records]  # before the clock starts
        if on_start is not None:
            on_start()
        started = paced.started = time.monotonic()
        batches = PartitionBatches(producer)
        queued: dict[int, list[int]] = {}  # per partition, the indexes of its records not yet in a sent batch
        sent = 0
        while sent < len(records):
            due = min(len(records), int((time.monotonic() - started) * rate_per_s) + 1)
            handed: list[SentBatch] = []
            for i in range(sent, due):
                if (full := await batches.add(topic, owners[i], records[i].key, records[i].value)) is not None:
                    handed.append(full)
                queued.setdefault(owners[i], []).append(i)
            for batch in handed + await batches.flush():
                indexes, queued[batch.partition] = (
                    queued[batch.partition][: batch.records],
                    queued[batch.partition][batch.records :],
                )
                sends.append((batch, indexes))
            progress(due - sent)
            sent = due
            await asyncio.sleep(_TICK_MS / 1000)
        paced.seconds = time.monotonic() - started
        for batch, indexes in sends:
            metadata = await batch.ack
            offsets = paced.sent_at.setdefault(batch.partition, {})
            for n, i in enumerate(indexes):
                offsets[metadata.offset + n] = started + i / rate_per_s
                paced.placed[i] = (batch.partition, metadata.offset + n)
            add_end(paced.ends, batch.partition, metadata.offset + len(indexes))
    finally:
        await producer.stop()
    return paced
