"""Pure: what one booking's new events do to its rows. No database, no clock, no logging.

The result depends only on the set of events, never on their order or repetition: the session follows the
snapshot with the newest (occurred_at, message_id), its cancellation is the earliest ``BookingCancelled`` (once
cancelled, always cancelled), and participants and reservations only ever grow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import NamedTuple
from uuid import UUID

from consumer.ids import session_cancelled_id, session_created_id, session_id, session_updated_id
from models.events import (
    BookingEvent,
    SessionEvent,
    SessionEventType,
    SessionStatus,
    session_event_fields,
    session_event_json,
)

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


class Cancellation(NamedTuple):
    """The ``BookingCancelled`` a cancelled session shows: the earliest one by (occurred_at, message_id).

    The earliest, because it depends only on the set of cancellations, never on their arrival order (as any
    minimum), and because it says when the booking really stopped: a later cancellation of an already cancelled
    booking is a repeat of the fact. Its reason goes with it, so ``cancelled_at`` and ``cancellation_reason``
    always come from one event.
    """

    cancelled_at: datetime  # the event's occurred_at
    message_id: UUID
    reason: str | None


class SessionRow(NamedTuple):
    """A ``live_sessions`` row as the decision sees it (CONTRACT "Rows"): ``id`` is UUIDv5 of ``booking_id``,
    ``version`` the (occurred_at, message_id) of the snapshot shown, ``cancellation`` None while SCHEDULED."""

    id: UUID
    booking_id: str
    details: SessionDetails
    meeting_link: str
    version: Version  # (occurred_at, message_id) of the snapshot the row shows
    cancellation: Cancellation | None = None  # None: SCHEDULED

    @property
    def status(self) -> SessionStatus:
        """``SCHEDULED``, or ``CANCELLED`` once a cancellation is recorded (final, CONTRACT "What each event does")."""
        return "SCHEDULED" if self.cancellation is None else "CANCELLED"


class OutboxRow(NamedTuple):
    """One SessionCreated/SessionUpdated/SessionCancelled message: what the session row shows, sent as ``kind``
    at ``now``. ``cause``: the message id of the input event that made it (its snapshot or its cancellation), whose
    trace the output record continues (CONTRACT "Output"); None when no event did (a meeting re-key)."""

    message_id: UUID
    kind: SessionEventType
    row: SessionRow
    now: datetime
    cause: UUID | None = None

    @property
    def key(self) -> str:
        """The output record's key: the booking id (CONTRACT "Topics"), so a booking's messages stay in order."""
        return self.row.booking_id

    @property
    def event(self) -> SessionEvent:
        """The message as the contract's model, validated (times as sent: milliseconds)."""
        return SessionEvent.model_validate(self.fields())

    def payload(self) -> str:
        """The JSON text written to ``outbox_messages.payload`` and published as is: ``event.model_dump_json()``."""
        return session_event_json(self.fields())

    def fields(self) -> dict[str, object]:
        """The message's fields as JSON values (``models.events.session_event_fields``)."""
        row, details, cancellation = self.row, self.row.details, self.row.cancellation
        return session_event_fields(
            message_id=self.message_id,
            kind=self.kind,
            occurred_at=self.now,
            booking_id=row.booking_id,
            session_id=row.id,
            status=row.status,
            meeting_link=row.meeting_link,
            scheduled_start=details.scheduled_start,
            duration_minutes=details.duration_minutes,
            instructor_id=details.instructor_id,
            student_id=details.student_id,
            title=details.title,
            cancellation_reason=None if cancellation is None else cancellation.reason,
        )


class Decision(NamedTuple):
    """What ``decide`` found for one booking: the rows to write (``store.write_decisions``) and the messages to
    announce, for one transaction (CONTRACT "What each event does", "Output")."""

    session_id: UUID
    session: SessionRow | None  # None: leave the session row alone
    learners: frozenset[str]  # students to ensure as LEARNER participant with a reservation
    outbox: tuple[OutboxRow, ...]
    cancelled: bool = False  # the session is CANCELLED after this decision: so are the learners' reservations
    first_write: bool = False  # no row existed when this was decided: the row is to be inserted, not updated


_NOBODY: frozenset[str] = frozenset()  # the learners of a decision without a BookingConfirmed


def version_of(event: BookingEvent) -> Version:
    """The order of snapshots: (occurred_at, message_id); ties on the instant go to the larger message id
    (CONTRACT "What each event does")."""
    return (event.occurred_at, event.message_id)


def details_of(event: BookingEvent) -> SessionDetails:
    """The session details the event's booking snapshot gives, the start converted to UTC."""
    booking = event.booking
    return SessionDetails(
        instructor_id=booking.instructor_id,
        student_id=booking.student_id,
        title=booking.title,
        scheduled_start=booking.scheduled_start.astimezone(UTC),
        duration_minutes=booking.duration_minutes,
    )


def cancellation_of(events: Sequence[BookingEvent]) -> Cancellation | None:
    """The earliest ``BookingCancelled`` among ``events`` (see ``Cancellation``), or None if there is none."""
    cancellations = [e for e in events if e.type == "BookingCancelled"]
    if not cancellations:
        return None
    first = min(cancellations, key=version_of)
    return Cancellation(first.occurred_at, first.message_id, first.cancellation_reason)


def earlier(current: Cancellation | None, new: Cancellation | None) -> Cancellation | None:
    """The earlier of two cancellations by (cancelled_at, message_id); None counts as none at all."""
    if current is None or new is None:
        return current or new
    return min(current, new, key=lambda c: (c.cancelled_at, c.message_id))


def decide(
    current: SessionRow | None,
    events: Sequence[BookingEvent],
    link_for: Callable[[UUID], str],
    now: datetime,
) -> Decision:
    """What one booking's new (not yet in the inbox) events do to its rows (CONTRACT "What each event does").

    ``current`` is the booking's session row as locked in the database (None: there is none yet); ``link_for``
    maps a session id to its meeting link; ``now`` stamps the outbox events. Raises ValueError on no events.

    Announcements: a ``SessionCreated`` when the row is first written SCHEDULED, one ``SessionCancelled`` when a
    SCHEDULED row becomes CANCELLED, a ``SessionUpdated`` when a newer snapshot changes the details of a
    SCHEDULED row. A row first written CANCELLED is never announced, and nothing is after a cancellation. Each
    names its ``cause``: the newest event (whose snapshot the row shows) for a SessionCreated or SessionUpdated, the
    cancellation (``Cancellation``) for a SessionCancelled.
    """
    if not events:
        raise ValueError("decide() needs at least one event")
    if len(events) == 1:
        # Most bookings have one new event in a batch: the same result without the scans over the events.
        newest = events[0]
        learners = frozenset((newest.booking.student_id,)) if newest.type == "BookingConfirmed" else _NOBODY
        cancellation = None
        if newest.type == "BookingCancelled":
            cancellation = Cancellation(newest.occurred_at, newest.message_id, newest.cancellation_reason)
    else:
        learners = frozenset([e.booking.student_id for e in events if e.type == "BookingConfirmed"])
        newest = max(events, key=version_of)
        cancellation = cancellation_of(events)
    newest_version = (newest.occurred_at, newest.message_id)
    if current is None:
        sid = session_id(newest.booking_id)
        row = SessionRow(sid, newest.booking_id, details_of(newest), link_for(sid), newest_version, cancellation)
        # Cancelled before anybody was told: the video service never hears of it.
        outbox = () if cancellation else (_outbox(row, "SessionCreated", session_created_id(sid), now, newest),)
        return Decision(sid, row, learners, outbox, row.cancellation is not None, first_write=True)
    sid, was_cancelled = current.id, current.cancellation
    cancelled_now = earlier(was_cancelled, cancellation)
    newer = current.version < newest_version  # an older snapshot never overwrites a newer one
    if not newer and cancelled_now == was_cancelled:
        return Decision(sid, None, learners, (), cancelled_now is not None)  # the row stays as it is
    details, version = (details_of(newest), newest_version) if newer else (current.details, current.version)
    # Built whole, not by _replace: that costs a microsecond a call, and this runs for most bookings of a batch.
    row = SessionRow(sid, current.booking_id, details, current.meeting_link, version, cancelled_now)
    cancelled = cancelled_now is not None
    if was_cancelled is not None or (details == current.details and not cancelled):
        # Cancelled before: the rows follow, nobody is told. Or a newer snapshot with the same details.
        return Decision(sid, row, learners, (), cancelled)
    if cancelled:
        cancelled_id = session_cancelled_id(sid)
        return Decision(sid, row, learners, (_outbox(row, "SessionCancelled", cancelled_id, now, cancellation),), True)
    updated_id = session_updated_id(sid, newest.message_id)
    return Decision(sid, row, learners, (_outbox(row, "SessionUpdated", updated_id, now, newest),))


def _outbox(
    row: SessionRow, kind: SessionEventType, message_id: UUID, now: datetime, cause: BookingEvent | Cancellation | None
) -> OutboxRow:
    return OutboxRow(message_id, kind, row, now, None if cause is None else cause.message_id)
