"""SessionCreated / SessionUpdated on the wire: exactly the shape of CONTRACT.md's output example."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.decide import Cancellation, OutboxRow, SessionDetails, SessionRow, decide
from consumer.decode import decode
from consumer.ids import meeting_link, session_created_id, session_id
from models.events import SessionEvent, SessionView
from tests.unit.builders import MAX_BYTES, body, record

SID = session_id("bk_123")
LINK = meeting_link("https://meet.jit.si", SID, b"secret")
PLUS_ONE = timezone(timedelta(hours=1))


def view(**changes: object) -> SessionView:
    fields: dict[str, object] = {
        "id": SID,
        "status": "SCHEDULED",
        "meeting_link": LINK,
        "scheduled_start": datetime(2026, 12, 1, 16, tzinfo=PLUS_ONE),
        "duration_minutes": 60,
        "instructor_id": "u_7",
        "student_id": "u_42",
        "title": "Algebra II",
    }
    return SessionView.model_validate({**fields, **changes})


def session_event(occurred_at: datetime, **changes: object) -> SessionEvent:
    return SessionEvent(
        message_id=session_created_id(SID),
        type="SessionCreated",
        occurred_at=occurred_at,
        booking_id="bk_123",
        session=view(**changes),
    )


def test_the_json_is_exactly_the_contract_example() -> None:
    text = session_event(datetime(2026, 11, 24, 10, 15, 0, 123000, tzinfo=UTC)).model_dump_json()

    assert json.loads(text) == {
        "message_id": str(session_created_id(SID)),
        "type": "SessionCreated",
        "schema_version": 1,
        "occurred_at": "2026-11-24T10:15:00.123Z",
        "booking_id": "bk_123",
        "session": {
            "id": str(SID),
            "status": "SCHEDULED",
            "meeting_link": LINK,
            "scheduled_start": "2026-12-01T15:00:00Z",
            "duration_minutes": 60,
            "instructor_id": "u_7",
            "student_id": "u_42",
            "title": "Algebra II",
        },
    }
    # Key order as in the contract, and schema_version a JSON integer.
    parsed = json.loads(text)
    assert list(parsed) == ["message_id", "type", "schema_version", "occurred_at", "booking_id", "session"]
    assert list(parsed["session"]) == [
        "id",
        "status",
        "meeting_link",
        "scheduled_start",
        "duration_minutes",
        "instructor_id",
        "student_id",
        "title",
    ]
    assert '"schema_version":1,' in text
    assert '"duration_minutes":60,' in text


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        pytest.param(datetime(2026, 11, 24, 10, 15, tzinfo=UTC), "2026-11-24T10:15:00Z", id="whole-second"),
        pytest.param(datetime(2026, 11, 24, 10, 15, 0, 120000, tzinfo=UTC), "2026-11-24T10:15:00.120Z", id="ms"),
        pytest.param(datetime(2026, 11, 24, 11, 15, 0, 1000, tzinfo=PLUS_ONE), "2026-11-24T10:15:00.001Z", id="+1"),
        pytest.param(
            datetime(2026, 11, 24, 4, 45, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
            "2026-11-24T10:15:00Z",
            id="-5:30",
        ),
    ],
)
def test_occurred_at_is_utc_with_z_and_milliseconds_only_when_there_are_any(moment: datetime, text: str) -> None:
    assert json.loads(session_event(moment).model_dump_json())["occurred_at"] == text


@pytest.mark.parametrize(
    ("start", "text"),
    [
        pytest.param(datetime(2026, 12, 1, 16, tzinfo=PLUS_ONE), "2026-12-01T15:00:00Z", id="+1"),
        pytest.param(datetime(2026, 12, 1, 15, tzinfo=UTC), "2026-12-01T15:00:00Z", id="utc"),
        pytest.param(
            datetime(2026, 12, 1, 0, 30, tzinfo=timezone(timedelta(hours=14))), "2026-11-30T10:30:00Z", id="+14"
        ),
        pytest.param(
            datetime(2026, 12, 31, 23, 0, 0, 500000, tzinfo=timezone(timedelta(hours=-2))),
            "2027-01-01T01:00:00.500Z",
            id="-2-next-year-ms",
        ),
    ],
)
def test_scheduled_start_is_converted_to_utc(start: datetime, text: str) -> None:
    event = session_event(datetime(2026, 11, 24, 10, 15, tzinfo=UTC), scheduled_start=start)

    assert json.loads(event.model_dump_json())["session"]["scheduled_start"] == text


def test_an_absent_title_is_null() -> None:
    event = session_event(datetime(2026, 11, 24, 10, 15, tzinfo=UTC), title=None)

    assert json.loads(event.model_dump_json())["session"]["title"] is None


def test_the_payload_reads_back_as_the_same_event() -> None:
    event = session_event(datetime(2026, 11, 24, 10, 15, 0, 123000, tzinfo=UTC))

    again = SessionEvent.model_validate_json(event.model_dump_json())

    assert again == event
    assert again.message_id == session_created_id(SID)


def test_the_outbox_payload_of_a_decision_is_the_contract_example() -> None:
    decoded = decode(record(body()), MAX_BYTES)
    assert decoded.event is not None
    now = datetime(2026, 11, 24, 10, 15, 0, 123000, tzinfo=UTC)

    [out] = decide(None, [decoded.event], lambda sid: LINK, now).outbox

    assert out.payload() == out.event.model_dump_json()
    assert json.loads(out.payload()) == json.loads(session_event(now).model_dump_json())
    assert UUID(json.loads(out.payload())["message_id"]) == out.message_id


TEXT = st.text(max_size=80)  # any unicode, quotes, backslashes and control characters included


@given(
    instructor=TEXT,
    student=TEXT,
    title=st.none() | TEXT,
    link=TEXT,
    start=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7))])),
    now=st.datetimes(timezones=st.just(UTC)),
    kind=st.sampled_from(["SessionCreated", "SessionUpdated", "SessionCancelled"]),
    reason=st.none() | TEXT,
)
def test_the_fast_payload_is_the_models_json_for_any_values(
    instructor: str,
    student: str,
    title: str | None,
    link: str,
    start: datetime,
    now: datetime,
    kind: str,
    reason: str | None,
) -> None:
    details = SessionDetails(instructor, student, title, start, 45)
    cancellation = Cancellation(now, SID, reason) if kind == "SessionCancelled" else None
    row = SessionRow(SID, "bk_123", details, link, (now, session_created_id(SID)), cancellation)
    out = OutboxRow(session_created_id(SID), kind, row, now)  # type: ignore[arg-type]

    assert out.payload() == out.event.model_dump_json()
    assert SessionEvent.model_validate_json(out.payload()) == out.event
