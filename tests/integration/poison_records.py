"""Poison records as the poison tests publish them, and what they read back: good neighbours, bodies with a
field changed, records written byte for byte, the one dead letter and its headers, the applied bookings."""

from __future__ import annotations

import json
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

from booking_sessions.settings import Settings
from models.records import OutgoingRecord
from producer.bookings import as_record, encode
from tests.integration.bookings import event
from tests.integration.dead_letters import read_dead_letters
from tests.integration.harness import query


def good(settings: Settings, booking: str) -> OutgoingRecord:
    return as_record(event("BookingApproved", booking, 0), settings.input_topic)


def body(booking: str, **changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(encode(event("BookingConfirmed", booking, 1)))
    for path, change in changes.items():
        *parents, last = path.split("__")
        target = value
        for part in parents:
            target = target[part]
        target[last] = change
    return value


async def publish_raw(
    settings: Settings,
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]],
    *,
    one_batch: bool,
) -> None:
    """Records written byte for byte as a non-Java producer may write them: header names are not checked here
    (aiokafka's own builder refuses a name that is not UTF-8; the broker does not). ``one_batch``: all in one
    record batch (the client reads them in one go); else one batch each (Tansu's end offset counts batches)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for group in [records] if one_batch else [[r] for r in records]:
            batch = producer.create_batch()
            batch._builder = _DefaultRecordBatchBuilderPy(
                magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1,
                base_sequence=0, batch_size=1 << 20,
            )  # fmt: skip
            for key, value, headers in group:
                batch.append(timestamp=None, key=key, value=value, headers=headers)
            await (await producer.send_batch(batch, settings.input_topic, partition=0))
    finally:
        await producer.stop()


async def dlq_headers_of_one(settings: Settings) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]:
    [dead] = await read_dead_letters(settings)
    return dead.key, dead.value, dead.headers


def without_failed_at(headers: list[tuple[str, bytes | None]]) -> list[tuple[str, bytes | None]]:
    assert [name for name, _ in headers].count("dlq-failed-at") == 1
    return [(name, value) for name, value in headers if name != "dlq-failed-at"]


async def applied_bookings(database_url: str) -> list[str]:
    rows = await query(database_url, "SELECT booking_request_id FROM live_sessions ORDER BY 1")
    return [r["booking_request_id"] for r in rows]
