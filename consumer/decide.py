"""Pure: what one booking's new events do to its rows. No database, no clock, no logging.

The result depends only on the set of events, never on their order or repetition: the session follows the
snapshot with the newest (occurred_at, message_id), and participants and reservations only ever grow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import NamedTuple
from uuid import UUID

from consumer.ids import session_created_id, session_id, session_updated_id
from models.events import BookingEvent, SessionEvent, SessionEventType, SessionView

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
    message_id: UUID
    key: str
    event: SessionEvent

    def payload(self) -> str:
        return self.event.model_dump_json()


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
    details = row.details
    # Built from values this module made and typed itself: construct, do not validate again (hot path).
    view = SessionView.model_construct(
        id=row.id,
        status="SCHEDULED",
        meeting_link=row.meeting_link,
        scheduled_start=details.scheduled_start,
        duration_minutes=details.duration_minutes,
        instructor_id=details.instructor_id,
        student_id=details.student_id,
        title=details.title,
    )
    event = SessionEvent.model_construct(
        message_id=message_id, type=kind, schema_version=1, occurred_at=now, booking_id=row.booking_id, session=view
    )
    return OutboxRow(message_id=message_id, key=row.booking_id, event=event)
