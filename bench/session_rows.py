"""A ``live_sessions`` row to and from ``consumer.decide.SessionRow``, for the bench's per-message baselines (the
naive old code and the FastStream peer), which read and write one session at a time where the service's
``consumer/store.py`` works on whole batches."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from consumer.decide import Cancellation, SessionDetails, SessionRow


def session_row(found: Row[Any] | None) -> SessionRow | None:
    """The ``live_sessions`` row (all its columns) as the ``SessionRow`` ``decide`` takes; None for no row."""
    if found is None:
        return None
    details = SessionDetails(
        found.instructor_id, found.student_id, found.title, found.scheduled_start, found.duration_minutes
    )
    cancellation = None
    if found.cancelled_at is not None:
        cancellation = Cancellation(found.cancelled_at, found.cancellation_message_id, found.cancellation_reason)
    version = (found.snapshot_occurred_at, found.snapshot_message_id)
    return SessionRow(found.id, found.booking_request_id, details, found.meeting_link, version, cancellation)


def session_columns(row: SessionRow) -> dict[str, Any]:
    """The columns a decision writes on an existing session (every one but its id, booking and meeting link),
    by ``live_sessions`` column name."""
    c = row.cancellation
    return {
        "instructor_id": row.details.instructor_id,
        "student_id": row.details.student_id,
        "title": row.details.title,
        "scheduled_start": row.details.scheduled_start,
        "duration_minutes": row.details.duration_minutes,
        "snapshot_occurred_at": row.version[0],
        "snapshot_message_id": row.version[1],
        "status": row.status,
        "cancelled_at": c.cancelled_at if c else None,
        "cancellation_message_id": c.message_id if c else None,
        "cancellation_reason": c.reason if c else None,
    }
