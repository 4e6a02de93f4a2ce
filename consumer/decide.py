"""Pure: what one booking's new events do to its rows. No database, no clock, no logging.

The result depends only on the set of events, never on their order or repetition: the session follows the
snapshot with the newest (occurred_at, message_id), and participants and reservations only ever grow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import NamedTuple
from uuid import UUID

from pydantic_core import to_json

from consumer.ids import session_created_id, session_id, session_updated_id
from models.events import BookingEvent, SessionEvent, SessionEventType, rfc3339_utc

Version = tuple[datetime, UUID]

# Immutable values as NamedTuples: several are built per booking in every batch, and a frozen dataclass's
# __init__ costs five times as much (one object.__setattr__ per field).


class SessionDetails(NamedTuple):
    """What the video service sees change; timestamps are normalised to UTC so equal instants compare equal."""

    instructor_id: str
    student_id: str
    title: str | None
    scheduled_start: datetime
    duration_minutes: int


class SessionRow(NamedTuple):
    id: UUID
    booking_id: str
    details: SessionDetails
    meeting_link: str
    version: Version  # (occurred_at, message_id) of the snapshot the row shows


class OutboxRow(NamedTuple):
    """One SessionCreated/SessionUpdated message: what the session row shows, sent as ``kind`` at ``now``."""

    message_id: UUID
    kind: SessionEventType
    row: SessionRow
    now: datetime

    @property
    def key(self) -> str:
        return self.row.booking_id

    @property
    def event(self) -> SessionEvent:
        """The message as the contract's model, validated."""
        return SessionEvent.model_validate(self._fields_as_dict())

    def payload(self) -> str:
        """``event.model_dump_json()``, without building the models: thousands of these are made a second.
        pydantic-core's serializer of plain values, so the same JSON; ``tests/unit/test_session_event.py``
        holds the two equal for any text."""
        return to_json(self._fields_as_dict()).decode()

    def _fields_as_dict(self) -> dict[str, object]:
        details = self.row.details
        return {  # SessionEvent's fields, in its order, as their JSON values
            "message_id": self.message_id,
            "type": self.kind,
            "schema_version": 1,
            "occurred_at": rfc3339_utc(self.now),
            "booking_id": self.row.booking_id,
            "session": {
                "id": self.row.id,
                "status": "SCHEDULED",
                "meeting_link": self.row.meeting_link,
                "scheduled_start": rfc3339_utc(details.scheduled_start),
                "duration_minutes": details.duration_minutes,
                "instructor_id": details.instructor_id,
                "student_id": details.student_id,
                "title": details.title,
            },
        }


class Decision(NamedTuple):
    session_id: UUID
    session: SessionRow | None  # None: leave the session row alone
    learners: frozenset[str]  # students to ensure as LEARNER participant with a CONFIRMED reservation
    outbox: tuple[OutboxRow, ...]


def version_of(event: BookingEvent) -> Version:
    return (event.occurred_at, event.message_id)


def details_of(event: BookingEvent) -> SessionDetails:
    booking = event.booking
    return SessionDetails(
        instructor_id=booking.instructor_id,
        student_id=booking.student_id,
        title=booking.title,
        scheduled_start=booking.scheduled_start.astimezone(UTC),
        duration_minutes=booking.duration_minutes,
    )


def decide(
    current: SessionRow | None,
    events: Sequence[BookingEvent],
    link_for: Callable[[UUID], str],
    now: datetime,
) -> Decision:
    """What one booking's new (not yet in the inbox) events do to its rows.

    ``link_for`` maps a session id to its meeting link; ``now`` stamps the outbox events.
    """
    if not events:
        raise ValueError("decide() needs at least one event")
    learners = frozenset([e.booking.student_id for e in events if e.type == "BookingConfirmed"])
    newest = max(events, key=version_of)
    sid = session_id(newest.booking_id) if current is None else current.id
    if current is not None and current.version >= version_of(newest):
        return Decision(sid, None, learners, ())  # an older snapshot never overwrites a newer one
    link = link_for(sid) if current is None else current.meeting_link
    row = SessionRow(sid, newest.booking_id, details_of(newest), link, version_of(newest))
    if current is None:
        return Decision(sid, row, learners, (_outbox(row, "SessionCreated", session_created_id(sid), now),))
    if row.details == current.details:
        return Decision(sid, row, learners, ())  # newer snapshot, same details: move the version, tell nobody
    updated_id = session_updated_id(sid, newest.message_id)
    return Decision(sid, row, learners, (_outbox(row, "SessionUpdated", updated_id, now),))


def _outbox(row: SessionRow, kind: SessionEventType, message_id: UUID, now: datetime) -> OutboxRow:
    return OutboxRow(message_id, kind, row, now)
