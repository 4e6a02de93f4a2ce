"""The publishing side of booking events: CONTRACT-valid events, keyed by booking id.

Used by ``demo``, the tests and the booking team's integration tests::

    event = booking_event("BookingConfirmed", "bk_123", student_id="u_42", instructor_id="u_7",
                          scheduled_start=datetime(2026, 12, 1, 15, tzinfo=UTC), duration_minutes=60)
    await BookingEventPublisher(publisher, "booking.events").publish(event)
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka.structs import RecordMetadata

from models.events import SCHEMA_VERSION, BookingEvent, BookingSnapshot, BookingType
from models.records import OutgoingRecord
from producer.publish import Publisher


def booking_event(
    type: BookingType,
    booking_id: str,
    *,
    student_id: str,
    instructor_id: str,
    scheduled_start: datetime,
    duration_minutes: int,
    title: str | None = None,
    auto_approved: bool = False,
    occurred_at: datetime | None = None,
    message_id: uuid.UUID | None = None,
    cancellation_reason: str | None = None,
) -> BookingEvent:
    """A validated event (schema version 1); a fresh message id and the current time unless given. Raises
    pydantic's ValidationError for anything the contract refuses (CONTRACT, "Input: a booking event")."""
    return BookingEvent(
        message_id=message_id or uuid.uuid4(),
        type=type,
        schema_version=SCHEMA_VERSION,
        occurred_at=occurred_at or datetime.now(UTC),
        booking_id=booking_id,
        booking=BookingSnapshot(
            student_id=student_id,
            instructor_id=instructor_id,
            scheduled_start=scheduled_start,
            duration_minutes=duration_minutes,
            title=title,
        ),
        auto_approved=auto_approved,
        cancellation_reason=cancellation_reason,
    )


def encode(event: BookingEvent) -> bytes:
    """The event as the contract's UTF-8 JSON (CONTRACT, "Input: a booking event")."""
    return event.model_dump_json().encode()


def as_record(event: BookingEvent, topic: str) -> OutgoingRecord:
    """The event as a record for ``topic``, keyed by its booking id (CONTRACT, "Topics": one booking, one partition)."""
    return OutgoingRecord(topic, event.booking_id.encode(), encode(event))


class BookingEventPublisher:
    """Publishes booking events to one topic through a started ``Publisher``."""

    def __init__(self, publisher: Publisher, topic: str) -> None:
        self._publisher = publisher
        self._topic = topic

    async def publish(self, *events: BookingEvent) -> list[RecordMetadata]:
        """Returns once the broker acknowledged every event, with each one's metadata; events of one booking keep
        their order. Raises the broker's KafkaError."""
        return await self.publish_all(events)

    async def publish_all(self, events: Sequence[BookingEvent]) -> list[RecordMetadata]:
        """As ``publish``, for a sequence; returns each event's metadata, in order; raises the broker's KafkaError."""
        return await self._publisher.send_all([as_record(e, self._topic) for e in events])
