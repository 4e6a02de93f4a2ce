"""The ceilings: how fast this machine reads the topic (a), and reads and decodes it as the service does (b)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from bench.produce import Ends, Progress
from bench.report import Stage
from booking_sessions.service import FETCH_LIMITS
from booking_sessions.settings import Settings
from consumer.client import to_record
from consumer.decode import Limits, decode

# The service's batch size (BOOKING_MAX_BATCH_RECORDS's default).
MAX_RECORDS: int = Settings.model_fields["max_batch_records"].default


async def batches_until(
    consumer: AIOKafkaConsumer, topic: str, ends: Ends
) -> AsyncIterator[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]:
    """Each fetched batch of ``topic`` from its beginning until every partition reached its produced end."""
    partitions = [TopicPartition(topic, p) for p in sorted(ends)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    position = dict.fromkeys(ends, 0)
    while any(position[p] < end for p, end in ends.items()):
        batch = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
        for tp, messages in batch.items():
            position[tp.partition] = messages[-1].offset + 1
        yield batch


async def consume_ceiling(
    bootstrap: str, topic: str, ends: Ends, *, decoding: bool, max_message_bytes: int, progress: Progress
) -> Stage:
    """Read every produced record from the beginning (no group, nothing committed); with ``decoding``, also turn
    each into the service's ``Record`` and run the service's ``decode`` on it (SHA-256, pydantic, key check)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **FETCH_LIMITS)
    await consumer.start()
    outcomes: Counter[str] = Counter()
    try:
        records = 0
        limits = Limits(value_bytes=max_message_bytes)  # once, as the service's processor holds its own
        started = time.monotonic()
        async for batch in batches_until(consumer, topic, ends):
            for messages in batch.values():
                records += len(messages)
                if decoding:
                    outcomes.update(decode(to_record(m), limits).outcome for m in messages)
            progress(sum(len(m) for m in batch.values()))
        seconds = time.monotonic() - started
    finally:
        await consumer.stop()
    if decoding:
        note = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
        return Stage("decode", "(b) consume + decode (service's decode)", records, seconds, note)
    return Stage("raw", "(a) raw aiokafka consume", records, seconds, "getmany, no processing")


def median_ceiling(reads: Sequence[Stage], when: Sequence[str]) -> Stage:
    """The read of (b) with the median rate among ``reads`` (taken at the moments ``when`` names), its note saying
    what each read gave. One read of a second and a half swung between about 110,000 and 140,000 records/s from one
    minute to the next on this workplace's machines, while (d) did not follow: (d)'s ratio to it was the luck of
    that moment. Reads next to (d), before and after it, see the machine (d) ran on."""
    ordered = sorted(reads, key=lambda stage: stage.per_s)
    median = ordered[len(ordered) // 2]
    each = ", ".join(f"{stage.per_s:,.0f} ({moment})" for stage, moment in zip(reads, when, strict=True))
    return replace(median, note=f"{median.note}; median of {len(reads)} reads/s: {each}")
