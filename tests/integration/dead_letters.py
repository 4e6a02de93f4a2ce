"""Records that must become dead letters, one per reason this service produces (CONTRACT, Dead letters), and
reading the DLQ back as raw bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass

from booking_sessions.settings import Settings
from booking_sessions.topics import read_topic
from models.records import OutgoingRecord
from producer.bookings import encode
from tests.integration.bookings import event
from tests.integration.harness import execute

# A null header value and an empty one are different on the wire; the DLQ keeps each as it was (CONTRACT).
ORIGINAL_HEADERS: list[tuple[str, bytes | None]] = [
    ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ("empty", b""),
    ("null", None),
]

# Why a test reading the DLQ to its end is skipped on Tansu.
TANSU_DLQ_END = (
    "the consumer sends a batch's dead letters in one request, and Tansu reports a topic's end offset as its last "
    "batch's base offset + 1: reading the DLQ up to its end offset stops early"
)


def with_headers(record: OutgoingRecord) -> OutgoingRecord:
    """The same record with ORIGINAL_HEADERS, which its dead letter must keep."""
    return OutgoingRecord(record.topic, record.key, record.value, tuple(ORIGINAL_HEADERS))


def invalid_record(topic: str, booking: str = "bk_bad") -> OutgoingRecord:
    """A confirmation of ``booking`` with duration_minutes 0: dead-lettered as ``invalid``."""
    body = json.loads(encode(event("BookingConfirmed", booking, 1)))
    body["booking"]["duration_minutes"] = 0
    return OutgoingRecord(topic, booking.encode(), json.dumps(body).encode())


def invalid(topic: str) -> list[OutgoingRecord]:
    """Reason ``invalid``: bk_bad's confirmation with duration_minutes 0."""
    return [invalid_record(topic)]


def unsupported_version(topic: str) -> list[OutgoingRecord]:
    """Reason ``unsupported_version``: bk_bad's confirmation as schema_version 2."""
    body = json.loads(encode(event("BookingConfirmed", "bk_bad", 1)))
    body["schema_version"] = 2
    return [OutgoingRecord(topic, b"bk_bad", json.dumps(body).encode())]


def key_mismatch(topic: str) -> list[OutgoingRecord]:
    """Reason ``key_mismatch``: bk_bad's confirmation keyed bk_other."""
    return [OutgoingRecord(topic, b"bk_other", encode(event("BookingConfirmed", "bk_bad", 1)))]


def too_large(topic: str) -> list[OutgoingRecord]:
    """Reason ``too_large``: bk_bad's confirmation padded past 64 KiB."""
    body = json.loads(encode(event("BookingConfirmed", "bk_bad", 1)))
    body["padding"] = "x" * (65 * 1024)  # otherwise valid: size alone decides
    return [OutgoingRecord(topic, b"bk_bad", json.dumps(body).encode())]


@dataclass(frozen=True)
class DeadLetter:
    """A DLQ record as it is on the wire."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


async def read_dead_letters(settings: Settings) -> list[DeadLetter]:
    """The DLQ's records as raw bytes (a dead letter need not be JSON)."""
    assert settings.kafka_bootstrap is not None
    records = await read_topic(settings.kafka_bootstrap, settings.dlq_topic, expected=1, timeout_s=20)
    return [DeadLetter(r.key, r.value, list(r.headers or ())) for r in records]


async def refuse_in_database(database_url: str, booking_id: str) -> None:
    """Make PostgreSQL refuse the session of ``booking_id``, a valid record: a trigger stands for any surprise in
    the database that validation cannot know of (only the INSERT finds out)."""
    await execute(
        database_url,
        """CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'booking % refused by a trigger', NEW.booking_request_id; END $$""",
    )
    await execute(
        database_url,
        f"""CREATE TRIGGER refuse_poison BEFORE INSERT ON live_sessions FOR EACH ROW
           WHEN (NEW.booking_request_id = '{booking_id}') EXECUTE FUNCTION refuse_poison()""",
    )
