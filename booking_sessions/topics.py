"""Topic administration for the embedded broker, the demo and the tests (production topics are provisioned)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int, **client_options: Any) -> None:
    """Create the topics that do not exist yet, with ``partitions`` partitions and replication factor 1; an existing
    topic is left as it is. Raises the broker's error (a KafkaError) when it refuses to create one."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, partitions, 1) for n in dict.fromkeys(names) if n not in existing]
        if missing:
            response = await admin.create_topics(missing)
            for name, code, *rest in response.topic_errors:
                # Created meanwhile by another process is what we wanted.
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise for_code(code)(f"cannot create topic {name}: {rest[0] if rest else ''}")
    finally:
        await admin.close()


async def partitions_of(bootstrap: str, topic: str, **client_options: Any) -> list[int]:
    """The partition numbers of ``topic``, sorted; raises LookupError when it does not exist (it is never created)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options)
    await admin.start()
    try:
        # Listed first: describing a missing topic creates it on a broker with auto.create.topics.enable.
        if topic not in await admin.list_topics():
            raise LookupError(f"topic {topic!r} does not exist")
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if not described or described[0]["error_code"] != 0 or not described[0]["partitions"]:
        raise LookupError(f"topic {topic!r} does not exist")
    return sorted(p["partition"] for p in described[0]["partitions"])


async def read_topic(
    bootstrap: str, topic: str, *, expected: int, timeout_s: float = 30.0, **client_options: Any
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the beginning, once at least ``expected`` arrived or ``timeout_s`` (seconds)
    is up: then what arrived, never an error for too few. Raises LookupError when the topic does not exist.

    No consumer group: reading back commits nothing and disturbs nobody.
    """
    partitions = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic, **client_options)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **client_options)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(records) < expected and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            records.extend(m for messages in batch.values() for m in messages)
        # One more short fetch: more than expected is worth knowing about (duplicates).
        batch = await consumer.getmany(timeout_ms=200)
        records.extend(m for messages in batch.values() for m in messages)
    finally:
        await consumer.stop()
    return records


async def offsets_missing(
    bootstrap: str, acknowledged: Iterable[tuple[str, int, int]], *, timeout_s: float = 5.0, **client_options: Any
) -> set[tuple[str, int, int]]:
    """Which of the ``acknowledged`` records, each (topic, partition, offset), the log does not hold: each partition
    is read from its beginning, without a consumer group, up to the last of them; out come those not found.

    Stops once every partition's position passed its last acknowledged offset, so a record missing below it is
    missing from the log, not late; or after ``timeout_s`` (seconds), judged on what was read by then (a partition
    whose last records are missing never gets that far). For a producer that wants to know the broker kept what it
    acknowledged (Tansu 0.6.0 may not, for two producers writing to one partition at once: README, "On the Tansu
    broker"). Raises the client's KafkaError when the broker cannot be reached."""
    wanted = set(acknowledged)
    ends: dict[tuple[str, int], int] = {}
    for topic, partition, offset in wanted:
        ends[(topic, partition)] = max(ends.get((topic, partition), 0), offset + 1)
    partitions = [TopicPartition(topic, partition) for topic, partition in ends]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **client_options)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline and [
            tp for tp in partitions if await consumer.position(tp) < ends[(tp.topic, tp.partition)]
        ]:
            batch = await consumer.getmany(*partitions, timeout_ms=200)
            wanted.difference_update((r.topic, r.partition, r.offset) for records in batch.values() for r in records)
    finally:
        await consumer.stop()
    return wanted
