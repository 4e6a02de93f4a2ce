"""The outbox payloads ``decide`` writes are the contract model's JSON, byte for byte (CONTRACT "Output"):
SessionCreated, SessionUpdated and SessionCancelled (with and without a reason), and byte-identical to the payloads
written before the JSON was built in one place (models/events.py, issue 11): the relay publishes these bytes, and a
republished copy of an old row must equal a new one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest

from consumer.decide import OutboxRow, decide
from consumer.ids import meeting_link
from models.events import SessionEvent, SessionView
from tests.unit.builders import event

NOW = datetime(2026, 11, 24, 10, 15, 0, 123000, tzinfo=UTC)
AT = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
START = datetime(2026, 12, 1, 16, tzinfo=timezone(timedelta(hours=1)))
APPROVED = UUID("7d0c1d3e-2a51-4a8e-9d35-0b1f0a6d2c11")
MOVED = UUID("7d0c1d3e-2a51-4a8e-9d35-0b1f0a6d2c12")
CANCELLED = UUID("7d0c1d3e-2a51-4a8e-9d35-0b1f0a6d2c13")


def link_for(session_id: UUID) -> str:
    return meeting_link("https://meet.jit.si", session_id, b"secret")


def _created() -> OutboxRow:
    [out] = decide(None, [event(APPROVED, AT, type="BookingApproved", scheduled_start=START)], link_for, NOW).outbox
    return out


def _updated() -> OutboxRow:
    current = decide(None, [event(APPROVED, AT, scheduled_start=START)], link_for, NOW).session
    moved = event(MOVED, AT + timedelta(hours=1), scheduled_start=START + timedelta(days=1), title=None)
    [out] = decide(current, [moved], link_for, NOW + timedelta(seconds=1)).outbox
    return out


def _cancelled(reason: str | None) -> OutboxRow:
    current = decide(None, [event(APPROVED, AT, scheduled_start=START)], link_for, NOW).session
    cancel = event(CANCELLED, AT + timedelta(hours=2), type="BookingCancelled", cancellation_reason=reason)
    [out] = decide(current, [cancel], link_for, NOW + timedelta(microseconds=500)).outbox
    return out


_HEAD = '{"message_id":"%s","type":"%s","schema_version":1,"occurred_at":"2026-11-24T10:15:0%s","booking_id":"bk_123",'
_SESSION = (
    '"session":{"id":"ef8eae3a-c1cd-5af6-98e8-f7603578527c","status":"%s",'
    '"meeting_link":"https://meet.jit.si/bs-1858afc7dd31fb40004c14888b970d74","scheduled_start":"2026-12-0%sT15:00:00Z",'
    '"duration_minutes":60,"instructor_id":"u_7","student_id":"u_42","title":%s'
)
_CANCELLED_ID = "77d224a0-f751-520b-839a-65d9d6b88f37"
# The payloads as written before the output JSON moved to models/events.py (issue 11), byte for byte.
BEFORE = {
    "created": _HEAD % ("85c1cd66-452d-5982-bef5-04d1360f51d9", "SessionCreated", "0.123Z")
    + _SESSION % ("SCHEDULED", "1", '"Algebra II"')
    + "}}",
    "updated": _HEAD % ("8955044a-2984-52e8-8ac2-28324171fa64", "SessionUpdated", "1.123Z")
    + _SESSION % ("SCHEDULED", "2", "null")
    + "}}",
    "cancelled-with-reason": _HEAD % (_CANCELLED_ID, "SessionCancelled", "0.123Z")
    + _SESSION % ("CANCELLED", "1", '"Algebra II"')
    + ',"cancellation_reason":"the student is ill"}}',
    "cancelled-without-reason": _HEAD % (_CANCELLED_ID, "SessionCancelled", "0.123Z")
    + _SESSION % ("CANCELLED", "1", '"Algebra II"')
    + "}}",
}
BUILDERS: dict[str, Callable[[], OutboxRow]] = {
    "created": _created,
    "updated": _updated,
    "cancelled-with-reason": lambda: _cancelled("the student is ill"),
    "cancelled-without-reason": lambda: _cancelled(None),
}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_the_payload_is_byte_identical_to_before(kind: str) -> None:
    assert BUILDERS[kind]().payload() == BEFORE[kind]


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_the_payload_is_the_models_json(kind: str) -> None:
    out = BUILDERS[kind]()
    row, cancellation = out.row, out.row.cancellation
    model = SessionEvent(
        message_id=out.message_id,
        type=out.kind,
        occurred_at=out.now,
        booking_id=row.booking_id,
        session=SessionView(
            id=row.id,
            status=row.status,
            meeting_link=row.meeting_link,
            scheduled_start=row.details.scheduled_start,
            duration_minutes=row.details.duration_minutes,
            instructor_id=row.details.instructor_id,
            student_id=row.details.student_id,
            title=row.details.title,
            cancellation_reason=None if cancellation is None else cancellation.reason,
        ),
    )

    assert out.payload() == model.model_dump_json()
    assert out.event == SessionEvent.model_validate_json(model.model_dump_json())  # times as sent: milliseconds
