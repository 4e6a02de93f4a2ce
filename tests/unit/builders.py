"""Small builders shared by the unit tests: the CONTRACT example event, as a dict and as a Kafka record."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from models.events import BookingEvent
from models.records import Headers, Record
from producer.bookings import booking_event

MESSAGE_ID = "7d0c1d3e-2a51-4a8e-9d35-0b1f0a6d2c11"
BOOKING_ID = "bk_123"
MAX_BYTES = 64 * 1024
TOPIC = "booking.events"

# Marks a key to delete in ``body(...)``.
DROP = object()


def example() -> dict[str, Any]:
    """The input example of CONTRACT.md, verbatim."""
    return {
        "message_id": MESSAGE_ID,
        "type": "BookingConfirmed",
        "schema_version": 1,
        "occurred_at": "2026-11-24T10:15:00Z",
        "booking_id": BOOKING_ID,
        "booking": {
            "student_id": "u_42",
            "instructor_id": "u_7",
            "scheduled_start": "2026-12-01T16:00:00+01:00",
            "duration_minutes": 60,
            "title": "Algebra II",
        },
        "auto_approved": True,
    }


def body(changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The example with changes applied; keys are dotted paths (``booking.title``), ``DROP`` deletes."""
    result = copy.deepcopy(example())
    for path, value in (changes or {}).items():
        *parents, last = path.split(".")
        target = result
        for part in parents:
            target = target[part]
        if value is DROP:
            target.pop(last, None)
        else:
            target[last] = value
    return result


def record(
    value: bytes | dict[str, Any] | None,
    key: bytes | None = BOOKING_ID.encode(),
    *,
    offset: int = 7,
    headers: Headers = (),
    timestamp_ms: int | None = None,
) -> Record:
    raw = json.dumps(value).encode() if isinstance(value, dict) else value
    return Record(TOPIC, 3, offset, key, raw, headers, timestamp_ms)


def event(
    message_id: UUID | str,
    occurred_at: datetime,
    *,
    type: str = "BookingConfirmed",
    booking_id: str = BOOKING_ID,
    student_id: str = "u_42",
    instructor_id: str = "u_7",
    scheduled_start: datetime = datetime(2026, 12, 1, 15, tzinfo=UTC),
    duration_minutes: int = 60,
    title: str | None = "Algebra II",
    cancellation_reason: str | None = None,
) -> BookingEvent:
    return booking_event(
        type,  # type: ignore[arg-type]
        booking_id,
        student_id=student_id,
        instructor_id=instructor_id,
        scheduled_start=scheduled_start,
        duration_minutes=duration_minutes,
        title=title,
        occurred_at=occurred_at,
        message_id=UUID(str(message_id)),
        cancellation_reason=cancellation_reason,
    )
