"""models.events: the pydantic contract models on their own, the producer's builder, and rfc3339_utc."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest
from pydantic import ValidationError

from consumer.decode import decode
from models.events import SCHEMA_VERSION, BookingEvent, BookingSnapshot
from models.fields import rfc3339_utc
from producer.bookings import as_record, booking_event, encode
from tests.unit.builders import DROP, MAX_BYTES, MESSAGE_ID, body, record

PLUS_ONE = timezone(timedelta(hours=1))


def parse(changes: dict[str, object] | None = None) -> BookingEvent:
    return BookingEvent.model_validate_json(json.dumps(body(changes)))


def test_schema_version_known_today_is_1() -> None:
    assert SCHEMA_VERSION == 1


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        pytest.param({"schema_version": "1"}, ("schema_version",), id="schema_version-string"),
        pytest.param({"booking.duration_minutes": "60"}, ("booking", "duration_minutes"), id="duration-string"),
        pytest.param({"occurred_at": 1764000000}, ("occurred_at",), id="occurred_at-number"),
        pytest.param({"occurred_at": "2026-11-24T10:15:00"}, ("occurred_at",), id="occurred_at-naive"),
        pytest.param({"booking.scheduled_start": "2026-12-01T16:00:00"}, ("booking", "scheduled_start"), id="naive"),
        pytest.param({"auto_approved": "false"}, ("auto_approved",), id="auto_approved-string"),
        pytest.param({"type": "BookingRescheduled"}, ("type",), id="type-unknown"),
    ],
)
def test_the_model_is_strict(changes: dict[str, object], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        parse(changes)

    assert [e["loc"] for e in caught.value.errors()] == [loc]


def test_unknown_fields_are_accepted_and_dropped() -> None:
    event = parse({"color": "red", "booking.room": "A1"})

    assert "color" not in event.model_dump()
    assert "room" not in event.booking.model_dump()


def test_defaults_title_none_and_auto_approved_false() -> None:
    event = parse({"booking.title": DROP, "auto_approved": DROP})

    assert event.booking.title is None
    assert event.auto_approved is False


def test_the_models_are_frozen() -> None:
    event = parse()

    with pytest.raises(ValidationError):
        event.booking_id = "other"  # type: ignore[misc]


def test_booking_event_builds_a_valid_event_that_decodes_to_itself() -> None:
    event = booking_event(
        "BookingApproved",
        "bk_9",
        student_id="u_1",
        instructor_id="u_2",
        scheduled_start=datetime(2026, 12, 1, 16, tzinfo=PLUS_ONE),
        duration_minutes=45,
        title="Chess",
        auto_approved=True,
        occurred_at=datetime(2026, 11, 24, 10, 15, 0, 250000, tzinfo=UTC),
        message_id=UUID(MESSAGE_ID),
    )

    out = as_record(event, "booking.events")
    assert (out.topic, out.key, out.value) == ("booking.events", b"bk_9", encode(event))

    d = decode(record(out.value, key=out.key), MAX_BYTES)
    assert d.outcome == "applied"
    assert d.event == event
    assert d.event.booking.scheduled_start.utcoffset() == timedelta(hours=1)


def test_booking_event_defaults_a_fresh_id_an_aware_now_and_no_auto_approval() -> None:
    before = datetime.now(UTC)
    first = booking_event(**_args())  # type: ignore[arg-type]
    second = booking_event(**_args())  # type: ignore[arg-type]

    assert first.message_id.version == 4
    assert first.message_id != second.message_id
    assert first.occurred_at.tzinfo is not None
    assert before <= first.occurred_at <= datetime.now(UTC)
    assert (first.auto_approved, first.booking.title, first.schema_version) == (False, None, 1)


def _args() -> dict[str, object]:
    return {
        "type": "BookingConfirmed",
        "booking_id": "bk_1",
        "student_id": "u_1",
        "instructor_id": "u_2",
        "scheduled_start": datetime(2026, 12, 1, 15, tzinfo=UTC),
        "duration_minutes": 60,
    }


def test_booking_event_refuses_what_the_contract_refuses() -> None:
    with pytest.raises(ValidationError):
        booking_event(**{**_args(), "duration_minutes": 0})  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        booking_event(**{**_args(), "booking_id": "bk 1"})  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        BookingSnapshot(student_id="u", instructor_id="i", scheduled_start=datetime(2026, 1, 1), duration_minutes=1)


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        pytest.param(datetime(2026, 11, 24, 10, 15, tzinfo=UTC), "2026-11-24T10:15:00Z", id="utc-whole-second"),
        pytest.param(datetime(2026, 11, 24, 10, 15, 0, 123000, tzinfo=UTC), "2026-11-24T10:15:00.123Z", id="ms"),
        pytest.param(datetime(2026, 11, 24, 10, 15, 0, 123999, tzinfo=UTC), "2026-11-24T10:15:00.123Z", id="us-cut"),
        pytest.param(datetime(2026, 12, 1, 16, tzinfo=PLUS_ONE), "2026-12-01T15:00:00Z", id="plus-one"),
        pytest.param(
            datetime(2026, 12, 31, 22, 30, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
            "2027-01-01T04:00:00Z",
            id="minus-5-30-next-year",
        ),
        pytest.param(
            datetime(2026, 1, 1, 0, 0, 0, 5000, tzinfo=timezone(timedelta(hours=14))),
            "2025-12-31T10:00:00.005Z",
            id="plus-14-previous-year",
        ),
    ],
)
def test_rfc3339_utc(moment: datetime, text: str) -> None:
    assert rfc3339_utc(moment) == text
