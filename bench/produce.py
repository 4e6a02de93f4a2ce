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
    pending: list[tuple[int, int, asyncio.Future[Any]]] = []

    async def settle(keep: int) -> None:
        while len(pending) > keep:
            partition, count, future = pending.pop(0)
            metadata = await future
            add_end(ends, partition, metadata.offset + count)  # a batch's metadata carries its base offset
            progress(count)

    try:
        open_batches: dict[int, Any] = {}
        for r in records:
            partition = partitioner(r.key, every, every)
            batch = open_batches.get(partition)
            if batch is None:
                batch = open_batches[partition] = producer.create_batch()
            if batch.append(key=r.key, value=r.value, timestamp=None) is None:  # full: send it, start another
                future = await producer.send_batch(batch, topic, partition=partition)
                pending.append((partition, batch.record_count(), future))
                await settle(_IN_FLIGHT_BATCHES)
                batch = open_batches[partition] = producer.create_batch()
                batch.append(key=r.key, value=r.value, timestamp=None)
        for partition, batch in open_batches.items():
            if batch.record_count():
                pending.append(
                    (partition, batch.record_count(), await producer.send_batch(batch, topic, partition=partition))
                )
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

    @property
    def records(self) -> int:
        return sum(len(offsets) for offsets in self.sent_at.values())


async def produce_paced(
    bootstrap: str, topic: str, records: Sequence[BenchRecord], rate_per_s: float, progress: Progress
) -> Paced:
    """Records at a steady rate, as an upstream producer with ``linger_ms=5`` sends them: every 5 ms, the records
    due by then, one batch per partition. Built as batches here rather than with one ``send()`` each, which
    would cost the bench about 20 µs of CPU per record on the very cores the service is measured on. A record's
    send time is when it was due, on the monotonic clock every process here shares: the time it waited in
    this producer counts against the service, as a producer's linger would."""
    producer = _producer(bootstrap, linger_ms=_TICK_MS)
    await producer.start()
    paced = Paced()
    sends: list[tuple[int, list[int], asyncio.Future[Any]]] = []  # partition, its records' indexes, the ack
    try:
        every = sorted(await producer.partitions_for(topic))
        partitioner = DefaultPartitioner()
        owners = [partitioner(r.key, every, every) for r in records]  # before the clock starts
        started = time.monotonic()
        sent = 0
        while sent < len(records):
            due = min(len(records), int((time.monotonic() - started) * rate_per_s) + 1)
            batches: dict[int, tuple[list[int], Any]] = {}
            for i in range(sent, due):
                r, partition = records[i], owners[i]
                indexes, batch = batches.get(partition) or ([], producer.create_batch())
                if batch.append(key=r.key, value=r.value, timestamp=None) is None:  # full: send it, start another
                    sends.append((partition, indexes, await producer.send_batch(batch, topic, partition=partition)))
                    indexes, batch = [], producer.create_batch()
                    batch.append(key=r.key, value=r.value, timestamp=None)
                indexes.append(i)
                batches[partition] = (indexes, batch)
            for partition, (indexes, batch) in batches.items():
                sends.append((partition, indexes, await producer.send_batch(batch, topic, partition=partition)))
            progress(due - sent)
            sent = due
            await asyncio.sleep(_TICK_MS / 1000)
        paced.seconds = time.monotonic() - started
        for partition, indexes, future in sends:
            metadata = await future  # a batch's metadata carries its base offset
            offsets = paced.sent_at.setdefault(partition, {})
            for n, i in enumerate(indexes):
                offsets[metadata.offset + n] = started + i / rate_per_s
            add_end(paced.ends, partition, metadata.offset + len(indexes))
    finally:
        await producer.stop()
    return paced
