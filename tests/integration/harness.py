"""Drive the real service step by step and look at what it left: rows in PostgreSQL, records in Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import create_async_engine

from booking_sessions.service import Service, open_service
from booking_sessions.settings import Settings
from booking_sessions.topics import read_topic
from consumer.loop import BatchHook
from models.events import BookingEvent
from models.records import OutgoingRecord
from producer.bookings import as_record
from producer.publish import Publisher
from producer.relay import OutboxRelay
from tests.waiting import eventually

Partition = tuple[str, int]  # (topic, partition)
Offsets = dict[Partition, int]
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Produced:
    """Next offset per partition after everything a test published: what 'consumed it all' means."""

    ends: Offsets = field(default_factory=dict)

    def add(self, topic: str, partition: int, offset: int) -> None:
        self.ends[(topic, partition)] = max(self.ends.get((topic, partition), 0), offset + 1)


async def publish(settings: Settings, items: Sequence[BookingEvent | OutgoingRecord], produced: Produced) -> None:
    assert settings.kafka_bootstrap is not None
    publisher = await Publisher.start(settings.kafka_bootstrap, client_id="test-upstream")
    try:
        records = [i if isinstance(i, OutgoingRecord) else as_record(i, settings.input_topic) for i in items]
        for metadata in await publisher.send_all(records):
            produced.add(metadata.topic, metadata.partition, metadata.offset)
    finally:
        await publisher.stop()


@contextlib.asynccontextmanager
async def service(settings: Settings, *, before_offset_commit: BatchHook | None = None) -> AsyncIterator[Service]:
    async with open_service(settings, before_offset_commit=before_offset_commit) as svc:
        yield svc


async def consume_all(svc: Service, produced: Produced, timeout_s: float = 60.0) -> Offsets:
    """Step the loop until it committed past every produced record; return the committed offsets."""
    committed: Offsets = {}

    async def caught_up() -> bool:
        result = await svc.loop.run_once()
        if result is not None:
            for tp, offset in result.next_offsets.items():
                committed[tp] = max(committed.get(tp, 0), offset)
        missing = {tp: end for tp, end in produced.ends.items() if committed.get(tp, 0) < end}
        assert not missing, f"not yet committed up to {missing}"
        return True

    await eventually(caught_up, what="the consumer to commit every produced record", timeout_s=timeout_s, interval_s=0)
    return committed


async def query(database_url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(text(sql), params)]
    finally:
        await engine.dispose()


async def execute(database_url: str, sql: str, **params: Any) -> int:
    """Run one writing statement and commit it (``query`` rolls back); returns the rows it affected."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            return (await conn.execute(text(sql), params)).rowcount
    finally:
        await engine.dispose()


async def snapshot(database_url: str) -> dict[str, list[dict[str, Any]]]:
    """Every contract row that must not change on redelivery (wall-clock columns left out)."""
    return {
        "sessions": await query(
            database_url,
            "SELECT id, booking_request_id, instructor_id, student_id, title, scheduled_start, duration_minutes,"
            " status, meeting_link, snapshot_occurred_at, snapshot_message_id, cancelled_at, cancellation_message_id,"
            " cancellation_reason, updated_at"
            " FROM live_sessions ORDER BY booking_request_id",
        ),
        "participants": await query(
            database_url, "SELECT session_id, user_id, role FROM session_participants ORDER BY 1, 2"
        ),
        "reservations": await query(
            database_url, "SELECT session_id, learner_id, status FROM session_reservations ORDER BY 1, 2"
        ),
        "inbox": await query(
            database_url,
            'SELECT message_id, outcome, payload_sha256, topic, partition, "offset", processed_at'
            " FROM inbox_messages ORDER BY message_id",
        ),
        "outbox": await query(
            database_url, "SELECT message_id, key, payload, created_at FROM outbox_messages ORDER BY id"
        ),
    }


async def read_json(settings: Settings, topic: str, expected: int) -> list[dict[str, Any]]:
    assert settings.kafka_bootstrap is not None
    records = await read_topic(settings.kafka_bootstrap, topic, expected=expected, timeout_s=20)
    return [decode_record(r) for r in records]


async def committed_offsets(
    settings: Settings, partitions: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], int | None]:
    """The live group's committed offsets, read as a client of the group would (no admin API needed)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return {tp: await consumer.committed(TopicPartition(*tp)) for tp in partitions}
    finally:
        await consumer.stop()


async def committed_to_the_end(settings: Settings, produced: Produced) -> bool:
    """True when the group's committed offset of every partition in ``produced`` is its end; AssertionError saying
    both otherwise (for ``eventually``)."""
    committed = await committed_offsets(settings, sorted(produced.ends))
    assert committed == produced.ends, f"committed {committed}, produced {produced.ends}"
    return True


async def some_applied(database_url: str, what: str = "the service at work", timeout_s: float = 60) -> None:
    """Until the first batch is in the inbox."""

    async def started() -> bool:
        [row] = await query(database_url, "SELECT count(*) AS n FROM inbox_messages")
        return bool(row["n"])

    await eventually(started, what=what, timeout_s=timeout_s)


def booking_env(settings: Settings) -> dict[str, str]:
    """The service's configuration as the BOOKING_* variables a process of it would read."""
    assert settings.kafka_bootstrap is not None and settings.meeting_secret is not None
    return {
        "BOOKING_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "BOOKING_DATABASE_URL": settings.database_url_value(),
        "BOOKING_INPUT_TOPIC": settings.input_topic,
        "BOOKING_OUTPUT_TOPIC": settings.output_topic,
        "BOOKING_DLQ_TOPIC": settings.dlq_topic,
        "BOOKING_GROUP_ID": settings.group_id,
        "BOOKING_MEETING_SECRET": settings.meeting_secret.get_secret_value(),
        "BOOKING_MEETING_KEY_VERSION": str(settings.meeting_key_version),
        "BOOKING_METRICS_PORT": "0",
    }


def env_for(settings: Settings) -> dict[str, str]:
    """The environment of a ``booking-sessions`` subprocess: this one's, with the test's BOOKING_* only."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("BOOKING_")}
    return inherited | booking_env(settings)


@contextlib.asynccontextmanager
async def running_process(settings: Settings, **extra_env: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``booking-sessions run`` as a real process (stderr piped); SIGKILLed on leaving if it still runs."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "booking_sessions.cli",
        "run",
        env=env_for(settings) | extra_env,
        cwd=REPO,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def sigterm(process: asyncio.subprocess.Process, timeout_s: float) -> bytes:
    """SIGTERM, then the process's exit within ``timeout_s``; returns what it wrote to stderr."""
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    return stderr


def decode_record(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    return {
        "key": record.key,
        "body": json.loads(record.value or b"null"),
        "partition": record.partition,
        "headers": list(record.headers or ()),
    }


async def relay_of_the_running_service(settings: Settings, database_url: str) -> int:
    """The relay as ``run`` builds it (same class, same lock), without the consumer: what it publishes now."""
    assert settings.kafka_bootstrap is not None
    engine = create_async_engine(database_url, poolclass=NullPool)
    publisher = await Publisher.start(settings.kafka_bootstrap, client_id="test-service-relay")
    try:
        return await OutboxRelay(engine, publisher, batch_rows=100).drain()
    finally:
        await publisher.stop()
        await engine.dispose()


async def sessions(database_url: str) -> dict[str, dict[str, object]]:
    """Every live_sessions row, keyed by booking id."""
    rows = await query(database_url, "SELECT * FROM live_sessions")
    return {r["booking_request_id"]: r for r in rows}


async def learners(database_url: str) -> set[tuple[str, str, str, str]]:
    """Every participant as (booking id, user id, role, reservation status)."""
    rows = await query(
        database_url,
        """
        SELECT s.booking_request_id, p.user_id, p.role, r.status
        FROM session_participants p
        JOIN live_sessions s ON s.id = p.session_id
        JOIN session_reservations r ON r.session_id = p.session_id AND r.learner_id = p.user_id
        """,
    )
    return {(r["booking_request_id"], r["user_id"], r["role"], r["status"]) for r in rows}


async def output_messages(settings: Settings, expected: int) -> list[dict[str, object]]:
    """The JSON bodies on the output topic, once at least ``expected`` are there."""
    return [m["body"] for m in await read_json(settings, settings.output_topic, expected)]
