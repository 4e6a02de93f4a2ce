"""decode(): every rule of CONTRACT.md's input table, one case each, with its exact outcome and reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from consumer.decode import decode
from tests.unit.builders import BOOKING_ID, DROP, MAX_BYTES, MESSAGE_ID, body, record
from tests.unit.decode_checks import KEEP, MID, assert_invalid, check_invariants

# --- every field rule of the input table: (changes, field named in the error, message id still readable) ----------

INVALID = [
    # message_id: UUID, required
    pytest.param({"message_id": DROP}, "message_id", None, id="message_id-missing"),
    pytest.param({"message_id": "not-a-uuid"}, "message_id", None, id="message_id-not-uuid"),
    pytest.param({"message_id": ""}, "message_id", None, id="message_id-empty"),
    pytest.param({"message_id": 42}, "message_id", None, id="message_id-number"),
    pytest.param({"message_id": "7d0c1d3e-2a51-4a8e-9d35-0b1f0a6d2c1"}, "message_id", None, id="message_id-short"),
    # type: a string; a missing or non-string type is no forward-compatible type
    pytest.param({"type": DROP}, "type", KEEP, id="type-missing"),
    pytest.param({"type": 5}, "type", KEEP, id="type-number"),
    # schema_version: integer, required
    pytest.param({"schema_version": "1"}, "schema_version", KEEP, id="schema_version-string"),
    pytest.param({"schema_version": 0}, "schema_version", MID, id="schema_version-0"),
    pytest.param({"schema_version": -1}, "schema_version", MID, id="schema_version-negative"),
    pytest.param({"schema_version": 1.5}, "schema_version", KEEP, id="schema_version-float"),
    pytest.param({"schema_version": True}, "schema_version", KEEP, id="schema_version-bool"),
    pytest.param({"schema_version": DROP}, "schema_version", KEEP, id="schema_version-missing"),
    # occurred_at: RFC 3339 with an offset, required
    pytest.param({"occurred_at": "2026-11-24T10:15:00"}, "occurred_at", MID, id="occurred_at-no-offset"),
    pytest.param({"occurred_at": 1764000000}, "occurred_at", MID, id="occurred_at-number"),
    pytest.param({"occurred_at": "2026-11-24"}, "occurred_at", MID, id="occurred_at-date-only"),
    pytest.param({"occurred_at": "yesterday"}, "occurred_at", MID, id="occurred_at-text"),
    pytest.param({"occurred_at": DROP}, "occurred_at", MID, id="occurred_at-missing"),
    # booking_id: 1..64 of [A-Za-z0-9_.:-], required
    pytest.param({"booking_id": ""}, "booking_id", MID, id="booking_id-empty"),
    pytest.param({"booking_id": "b" * 65}, "booking_id", MID, id="booking_id-65"),
    pytest.param({"booking_id": "bk 123"}, "booking_id", MID, id="booking_id-space"),
    pytest.param({"booking_id": "bk/123"}, "booking_id", MID, id="booking_id-slash"),
    pytest.param({"booking_id": "bk_123\n"}, "booking_id", MID, id="booking_id-trailing-newline"),
    pytest.param({"booking_id": "bk_\u00e9"}, "booking_id", MID, id="booking_id-non-ascii"),
    pytest.param({"booking_id": DROP}, "booking_id", MID, id="booking_id-missing"),
    # booking: required object
    pytest.param({"booking": DROP}, "booking", MID, id="booking-missing"),
    pytest.param({"booking": "bk"}, "booking", MID, id="booking-not-object"),
    # booking.student_id / booking.instructor_id: 1..64 characters, required
    pytest.param({"booking.student_id": ""}, "booking.student_id", MID, id="student_id-empty"),
    pytest.param({"booking.student_id": "s" * 65}, "booking.student_id", MID, id="student_id-65"),
    pytest.param({"booking.student_id": DROP}, "booking.student_id", MID, id="student_id-missing"),
    pytest.param({"booking.student_id": 42}, "booking.student_id", MID, id="student_id-number"),
    pytest.param({"booking.instructor_id": ""}, "booking.instructor_id", MID, id="instructor_id-empty"),
    pytest.param({"booking.instructor_id": "i" * 65}, "booking.instructor_id", MID, id="instructor_id-65"),
    pytest.param({"booking.instructor_id": DROP}, "booking.instructor_id", MID, id="instructor_id-missing"),
    # booking.scheduled_start: RFC 3339 with an offset, required
    pytest.param(
        {"booking.scheduled_start": "2026-12-01T16:00:00"},
        "booking.scheduled_start",
        MID,
        id="scheduled_start-no-offset",
    ),
    pytest.param({"booking.scheduled_start": 1764601200}, "booking.scheduled_start", MID, id="scheduled_start-number"),
    pytest.param({"booking.scheduled_start": DROP}, "booking.scheduled_start", MID, id="scheduled_start-missing"),
    # booking.duration_minutes: integer 1..720, required
    pytest.param({"booking.duration_minutes": 0}, "booking.duration_minutes", MID, id="duration-0"),
    pytest.param({"booking.duration_minutes": 721}, "booking.duration_minutes", MID, id="duration-721"),
    pytest.param({"booking.duration_minutes": -60}, "booking.duration_minutes", MID, id="duration-negative"),
    pytest.param({"booking.duration_minutes": "60"}, "booking.duration_minutes", MID, id="duration-string"),
    pytest.param({"booking.duration_minutes": 60.5}, "booking.duration_minutes", MID, id="duration-float"),
    pytest.param({"booking.duration_minutes": DROP}, "booking.duration_minutes", MID, id="duration-missing"),
    # booking.title: string of at most 200 characters, optional
    pytest.param({"booking.title": "t" * 201}, "booking.title", MID, id="title-201"),
    pytest.param({"booking.title": 7}, "booking.title", MID, id="title-number"),
    # auto_approved: boolean, optional
    pytest.param({"auto_approved": "true"}, "auto_approved", MID, id="auto_approved-string"),
    pytest.param({"auto_approved": 1}, "auto_approved", MID, id="auto_approved-number"),
]


@pytest.mark.parametrize(("changes", "field", "message_id"), INVALID)
def test_a_rule_broken_is_dead_lettered_as_invalid(changes: dict[str, Any], field: str, message_id: object) -> None:
    d = decode(record(body(changes)), MAX_BYTES)

    assert_invalid(d, field, message_id)
    if message_id is MID:
        # The envelope was readable: the inbox row says what it was.
        assert (d.event_type, d.booking_id) == (
            "BookingConfirmed",
            BOOKING_ID if "booking_id" not in changes else None,
        )


def test_the_error_does_not_echo_the_input() -> None:
    title = "secret-title-" + "x" * 190
    d = decode(record(body({"booking.title": title})), MAX_BYTES)

    assert_invalid(d, "booking.title")
    assert title not in (d.error or "")


def test_an_error_with_many_problems_stays_within_1_kib() -> None:
    broken = {
        "message_id": MESSAGE_ID,
        "type": "BookingApproved",
        "schema_version": 1,
        "occurred_at": "x" * 5000,
        "booking_id": "b" * 5000,
        "booking": {"student_id": "", "instructor_id": "", "scheduled_start": "no", "duration_minutes": "60"},
        "auto_approved": "yes",
    }
    d = decode(record(broken), MAX_BYTES)

    assert_invalid(d, "occurred_at")
    assert len((d.error or "").encode()) <= 1024


# --- values that pass ---------------------------------------------------------------------------------------


VALID = [
    pytest.param({}, id="contract-example"),
    pytest.param({"type": "BookingApproved"}, id="approved"),
    pytest.param({"booking.duration_minutes": 1}, id="duration-1"),
    pytest.param({"booking.duration_minutes": 720}, id="duration-720"),
    pytest.param({"booking.title": "t" * 200}, id="title-200"),
    pytest.param({"booking.title": DROP}, id="title-absent"),
    pytest.param({"booking.title": None}, id="title-null"),
    pytest.param({"auto_approved": DROP}, id="auto_approved-absent"),
    pytest.param({"booking.student_id": "s" * 64, "booking.instructor_id": "i" * 64}, id="user-ids-64"),
    pytest.param({"booking.student_id": "s", "booking.instructor_id": "i"}, id="user-ids-1"),
    pytest.param({"occurred_at": "2026-11-24T11:15:00+01:00"}, id="occurred_at-offset"),
    pytest.param({"occurred_at": "2026-11-24T10:15:00.123456Z"}, id="occurred_at-fraction"),
    pytest.param({"extra": {"nested": [1, 2]}, "booking.room": "A1"}, id="unknown-extra-fields"),
]


@pytest.mark.parametrize("changes", VALID)
def test_a_valid_event_is_applied(changes: dict[str, Any]) -> None:
    sent = body(changes)
    d = decode(record(sent), MAX_BYTES)

    check_invariants(d)
    assert d.outcome == "applied"
    assert (d.message_id, d.event_type, d.booking_id) == (MID, sent["type"], BOOKING_ID)
    assert d.event is not None
    booking = d.event.booking
    assert booking.student_id == sent["booking"]["student_id"]
    assert booking.instructor_id == sent["booking"]["instructor_id"]
    assert booking.duration_minutes == sent["booking"]["duration_minutes"]
    assert booking.title == sent["booking"].get("title")
    assert d.event.auto_approved is sent.get("auto_approved", False)
    assert booking.scheduled_start == datetime(2026, 12, 1, 15, tzinfo=UTC)


def test_the_contract_example_parses_to_exact_values() -> None:
    d = decode(record(body()), MAX_BYTES)

    assert d.event is not None
    assert d.event.message_id == MID
    assert d.event.type == "BookingConfirmed"
    assert d.event.schema_version == 1
    assert d.event.occurred_at == datetime(2026, 11, 24, 10, 15, tzinfo=UTC)
    assert d.event.booking_id == "bk_123"
    start = d.event.booking.scheduled_start
    assert start.utcoffset() == timedelta(hours=1)  # the offset as sent; compared as an instant
    assert start == datetime(2026, 12, 1, 16, tzinfo=timezone(timedelta(hours=1)))
    assert d.event.booking.title == "Algebra II"
    assert d.event.auto_approved is True


def test_booking_id_of_64_characters_is_valid() -> None:
    booking_id = "A-z0_.:" + "b" * 57
    d = decode(record(body({"booking_id": booking_id}), key=booking_id.encode()), MAX_BYTES)

    assert (d.outcome, d.booking_id) == ("applied", booking_id)


def test_auto_approved_defaults_to_false() -> None:
    d = decode(record(body({"type": "BookingApproved", "auto_approved": DROP})), MAX_BYTES)

    assert d.event is not None
    assert d.event.auto_approved is False


# --- type and schema_version: forward compatibility -----------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"type": "BookingRescheduled"}, id="same-shape"),
        pytest.param(
            {"type": "BookingRescheduled", "booking": {"whatever": True}, "occurred_at": 12, "auto_approved": "x"},
            id="other-shape",
        ),
        pytest.param({"type": "BookingRescheduled", "booking": DROP, "occurred_at": DROP}, id="minimal"),
    ],
)
def test_an_unknown_type_is_ignored_and_its_message_id_recorded(changes: dict[str, Any]) -> None:
    d = decode(record(body(changes)), MAX_BYTES)

    check_invariants(d)
    assert (d.outcome, d.reason, d.error) == ("ignored", None, None)
    assert (d.message_id, d.event_type, d.booking_id) == (MID, changes["type"], BOOKING_ID)


def test_an_unknown_type_with_a_malformed_booking_id_records_no_booking_id() -> None:
    d = decode(record(body({"type": "BookingRescheduled", "booking_id": "not a booking id"})), MAX_BYTES)

    assert (d.outcome, d.message_id, d.booking_id) == ("ignored", MID, None)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"schema_version": 2}, id="same-shape"),
        pytest.param({"schema_version": 99}, id="much-newer"),
        pytest.param(
            {"schema_version": 2, "booking": {"v2": [1]}, "occurred_at": 12, "duration": "PT1H"},
            id="other-shape",
        ),
        pytest.param({"schema_version": 2, "booking": DROP, "occurred_at": DROP}, id="minimal"),
    ],
)
def test_a_newer_schema_version_is_unsupported(changes: dict[str, Any]) -> None:
    d = decode(record(body(changes)), MAX_BYTES)

    check_invariants(d)
    assert (d.outcome, d.reason) == ("dead_lettered", "unsupported_version")
    assert (d.message_id, d.event_type, d.booking_id) == (MID, "BookingConfirmed", BOOKING_ID)
    assert "schema_version" in (d.error or "")
    assert str(changes["schema_version"]) in (d.error or "")


@pytest.mark.parametrize(
    ("changes", "outcome", "reason"),
    [
        pytest.param({"schema_version": 2, "booking_id": {"id": "bk_123"}}, "dead_lettered", "unsupported_version"),
        pytest.param({"schema_version": 2, "booking_id": 123}, "dead_lettered", "unsupported_version"),
        pytest.param({"type": "BookingRescheduled", "booking_id": 123}, "ignored", None),
    ],
)
def test_a_newer_or_unknown_event_with_another_booking_id_shape_is_still_classified(
    changes: dict[str, Any], outcome: str, reason: str | None
) -> None:
    d = decode(record(body(changes)), MAX_BYTES)

    assert (d.outcome, d.reason, d.message_id, d.booking_id) == (outcome, reason, MID, None)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"occurred_at": "1764000000"}, "occurred_at", id="occurred_at-unix-string"),
        pytest.param({"occurred_at": "1764000000.5"}, "occurred_at", id="occurred_at-unix-float-string"),
        pytest.param({"booking.scheduled_start": "1764601200"}, "booking.scheduled_start", id="start-unix-string"),
    ],
)
def test_a_unix_time_string_is_not_an_rfc3339_timestamp(changes: dict[str, Any], field: str) -> None:
    d = decode(record(body(changes)), MAX_BYTES)

    assert_invalid(d, field)
