"""The booking events the integration tests publish: ``event(kind, booking, minute)`` is a CONTRACT-valid event
that occurred ``minute`` minutes after T0, for a one-hour session starting at START."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from models.events import BookingEvent
from producer.bookings import booking_event

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


START = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def event(kind: str, booking: str, minute: int, **overrides: object) -> BookingEvent:
    """A ``kind`` event of ``booking`` (a new message id) at T0 + ``minute`` minutes; ``overrides`` replace the
    booking's fields (student-<booking>, u_7, START, 60 minutes, "Algebra II") or set occurred_at."""
    fields: dict[str, object] = {
        "student_id": f"student-{booking}",
        "instructor_id": "u_7",
        "scheduled_start": START,
        "duration_minutes": 60,
        "title": "Algebra II",
        "occurred_at": T0 + timedelta(minutes=minute),
        **overrides,
    }
    return booking_event(kind, booking, **fields)  # type: ignore[arg-type]
