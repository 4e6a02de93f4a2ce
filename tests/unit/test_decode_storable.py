"""decode(): what PostgreSQL would refuse is refused first, naming the field (issue 12), and the bounds on keys and
headers (issue 16). Every case is one small input with its exact outcome."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from consumer.decode import Limits, decode
from models.records import Record
from tests.unit.builders import DROP, MAX_BYTES, body, record
from tests.unit.decode_checks import MID, assert_invalid, check_invariants, no_parsing  # noqa: F401 (a fixture)

# The example's occurred_at, 2026-11-24T10:15:00Z, as a Kafka timestamp.
OCCURRED_MS = int(datetime(2026, 11, 24, 10, 15, tzinfo=UTC).timestamp() * 1000)

STORED_STRINGS = ["booking.student_id", "booking.instructor_id", "booking.title", "cancellation_reason"]


@pytest.mark.parametrize("field", STORED_STRINGS)
@pytest.mark.parametrize(
    ("char", "code"),
    [
        ("\x00", "U+0000"),
        ("\x01", "U+0001"),
        ("\n", "U+000A"),
        ("\r", "U+000D"),
        ("\x1b", "U+001B"),
        ("\x7f", "U+007F"),
    ],
)
def test_a_control_character_in_a_stored_string_is_invalid_and_named(field: str, char: str, code: str) -> None:
    d = decode(record(body({field: f"ab{char}cd"})), MAX_BYTES)

    assert_invalid(d, field)
    assert code in (d.error or "")
    assert "at character 2" in (d.error or "")


@pytest.mark.parametrize("field", STORED_STRINGS)
def test_a_tab_and_other_unicode_are_fine(field: str) -> None:
    d = decode(record(body({field: "a\tb \u00e9\u20ac\U0001f600\u0085"})), MAX_BYTES)

    check_invariants(d)
    assert d.outcome == "applied"


@pytest.mark.parametrize("booking_id", ["bk_1\x00", "\x00", "bk\x7f"])
def test_a_control_character_in_booking_id_is_invalid(booking_id: str) -> None:
    d = decode(record(body({"booking_id": booking_id}), key=None), MAX_BYTES)

    assert_invalid(d, "booking_id")


def test_an_unknown_type_with_u0000_is_invalid_not_ignored() -> None:
    # JSON's own escape, as issue 12 saw it: as "ignored" its inbox row could not be stored.
    value = json.dumps(body({"type": "BookingCancelled\u0000"})).encode()
    assert b"\\u0000" in value

    d = decode(record(value), MAX_BYTES)

    check_invariants(d)
    # Its message id is readable: recorded with the dead letter, so a copy is a duplicate, a changed one a conflict.
    assert (d.outcome, d.reason, d.message_id, d.event_type) == ("dead_lettered", "invalid", MID, "unknown")
    assert d.error is not None
    assert d.error.startswith("type: Value error, must not contain control characters (U+0000 at character 16)")


@pytest.mark.parametrize("event_type", ["Booking\x01Moved", "BookingMoved\n", "\x7f"])
def test_an_unknown_type_with_a_control_character_is_invalid(event_type: str) -> None:
    d = decode(record(body({"type": event_type})), MAX_BYTES)

    assert_invalid(d, "type", message_id=MID)


@pytest.mark.parametrize("event_type", ["", "X" * 201, "Booking Moved"])
def test_an_unknown_type_is_any_other_string_and_ignored(event_type: str) -> None:
    # CONTRACT "Input": "Any other string: recorded as ignored" (the empty one and a long one were invalid).
    d = decode(record(body({"type": event_type})), MAX_BYTES)

    assert (d.outcome, d.event_type, d.message_id) == ("ignored", event_type, MID)


@pytest.mark.parametrize(
    "changes",
    [
        {"schema_version": 2, "message_id": DROP},
        {"schema_version": 2, "type": {"name": "BookingApproved"}},
        {"schema_version": 3, "id": "x", "kind": "y", "type": DROP},
    ],
    ids=["no-message-id", "type-an-object", "another-envelope"],
)
def test_a_newer_schema_version_is_unsupported_whatever_its_envelope(changes: dict[str, object]) -> None:
    # A newer schema may change the envelope itself: it is not "invalid" by this build's rules (was invalid).
    d = decode(record(body(changes)), MAX_BYTES)

    check_invariants(d)
    assert (d.outcome, d.reason) == ("dead_lettered", "unsupported_version")
    assert d.message_id == (None if changes.get("message_id") is DROP else MID)


@pytest.mark.parametrize(
    "changes",
    [{"schema_version": 1.0}, {"schema_version": True}, {"schema_version": "1"}, {"type": DROP}, {"type": 5}],
    ids=["version-float", "version-bool", "version-string", "type-missing", "type-number"],
)
def test_a_broken_envelope_keeps_its_readable_message_id_for_the_inbox(changes: dict[str, object]) -> None:
    # CONTRACT: every dead-lettered message id is recorded; before, these went to the DLQ without an inbox row, a
    # copy was dead-lettered again and a corrected copy under the same id applied instead of a conflict.
    d = decode(record(body(changes)), MAX_BYTES)

    assert_invalid(d, "schema_version" if "schema_version" in changes else "type", message_id=MID)
    assert (d.booking_id, d.event_type) == ("bk_123", "unknown" if "type" in changes else "BookingConfirmed")


def test_an_unknown_type_with_a_tab_is_still_ignored() -> None:
    d = decode(record(body({"type": "Booking\tMoved"})), MAX_BYTES)

    assert (d.outcome, d.event_type, d.message_id) == ("ignored", "Booking\tMoved", MID)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("where", ["extra", "booking.duration_minutes"])
def test_nan_or_infinity_anywhere_is_not_strict_json(token: str, where: str) -> None:
    value = json.dumps(body({where: 0})).replace(f'"{where.split(".")[-1]}": 0', f'"{where.split(".")[-1]}": {token}')
    assert token in value

    d = decode(record(value.encode()), MAX_BYTES)

    # Under its message id, as every dead letter whose id is readable: a corrected copy is a message_id_conflict.
    assert_invalid(d, "value", message_id=MID)
    assert (d.booking_id, d.event_type) == ("bk_123", "BookingConfirmed")
    assert "strict JSON" in (d.error or "")


def test_nan_inside_a_string_is_fine() -> None:
    d = decode(record(body({"booking.title": "NaN and Infinity"})), MAX_BYTES)

    assert d.outcome == "applied"


@pytest.mark.parametrize(
    ("start", "outcome"),
    [
        pytest.param("1970-01-01T00:00:00Z", "applied", id="1970-utc"),
        pytest.param("1970-01-01T01:00:00+01:00", "applied", id="1970-in-utc-via-offset"),
        pytest.param("1970-01-01T00:59:59+01:00", "invalid", id="1969-in-utc"),
        pytest.param("1969-12-31T23:59:59Z", "invalid", id="1969"),
        pytest.param("9999-01-01T00:00:00Z", "applied", id="9999-01-01"),
        pytest.param("9999-01-01T00:00:01Z", "invalid", id="after-9999-01-01"),
        pytest.param("9998-12-31T23:00:00-01:00", "applied", id="9999-01-01-via-offset"),
        pytest.param("9999-12-31T23:59:59-12:00", "invalid", id="year-10000-in-utc"),
        pytest.param("0001-01-01T00:00:00+01:00", "invalid", id="year-0-in-utc"),
    ],
)
def test_scheduled_start_is_between_1970_and_9999_in_utc(start: str, outcome: str) -> None:
    d = decode(record(body({"booking.scheduled_start": start})), MAX_BYTES)

    if outcome == "applied":
        assert d.outcome == "applied", d.error
    else:
        assert_invalid(d, "booking.scheduled_start")


@pytest.mark.parametrize("occurred_at", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+00:01"])
def test_occurred_at_outside_the_utc_years_is_invalid(occurred_at: str) -> None:
    d = decode(record(body({"occurred_at": occurred_at})), MAX_BYTES)

    assert_invalid(d, "occurred_at")
    assert "UTC" in (d.error or "")


@pytest.mark.parametrize(
    ("late_s", "outcome"),
    [(-86400, "applied"), (0, "applied"), (3600, "applied"), (3601, "invalid"), (10**9, "invalid")],
)
def test_occurred_at_is_at_most_the_skew_after_the_record_timestamp(late_s: int, outcome: str) -> None:
    d = decode(record(body(), timestamp_ms=OCCURRED_MS - late_s * 1000), MAX_BYTES)

    if outcome == "applied":
        assert d.outcome == "applied"
    else:
        assert_invalid(d, "occurred_at")
        assert (d.event_type, d.booking_id) == ("BookingConfirmed", "bk_123")
        assert f"{late_s} s after the record's timestamp; at most 3600 s allowed" in (d.error or "")


def test_the_skew_is_configurable() -> None:
    r = record(body(), timestamp_ms=OCCURRED_MS - 61_000)

    assert decode(r, Limits(clock_skew_s=60)).outcome == "dead_lettered"
    assert decode(r, Limits(clock_skew_s=61)).outcome == "applied"


def test_the_year_2999_is_invalid_against_a_record_of_today() -> None:
    d = decode(record(body({"occurred_at": "2999-01-01T00:00:00Z"}), timestamp_ms=OCCURRED_MS), MAX_BYTES)

    assert_invalid(d, "occurred_at")


@pytest.mark.parametrize("timestamp_ms", [None, -1])
def test_without_a_record_timestamp_occurred_at_is_bounded_by_when_it_was_received(timestamp_ms: int | None) -> None:
    # A producer may write -1 and the broker keeps it: before, such a record's occurred_at was not bounded at all,
    # and one event dated 9999 pinned its session's details for good.
    pinned = record(body({"occurred_at": "9999-12-31T23:59:59Z"}), timestamp_ms=timestamp_ms)
    d = decode(pinned, MAX_BYTES, received_ms=OCCURRED_MS)

    assert_invalid(d, "occurred_at")
    assert "after the time it was received (the record has no timestamp); at most 3600 s allowed" in (d.error or "")
    fresh = record(body(), timestamp_ms=timestamp_ms)
    assert decode(fresh, MAX_BYTES, received_ms=OCCURRED_MS + 1000).outcome == "applied"
    assert decode(pinned, MAX_BYTES).outcome == "applied"  # a caller that cannot say when: unbounded, as before


# --- bounds on the key and the headers (issue 16): too_large, never parsed -----------------------------------------

LIMITS = Limits(value_bytes=MAX_BYTES, key_bytes=16, header_count=3, header_bytes=40)
REPLAYED = (("dlq-replayed-at", b"2026-11-24T10:00:00Z"), ("dlq-replayed-from", b"booking.events.dlq/0/9"))


@pytest.mark.parametrize(
    ("key", "headers", "error"),
    [
        pytest.param(b"k" * 17, (), "key is 17 bytes, limit is 16", id="key"),
        pytest.param(b"bk_123", (("h", None),) * 4, "4 headers, limit is 3", id="header-count"),
        pytest.param(b"bk_123", (("h", None),) * 4 + REPLAYED, "4 headers, limit is 3", id="header-count-replayed"),
        pytest.param(b"bk_123", (("h", None),) * 2 + REPLAYED[::-1], "4 headers, limit is 3", id="markers-not-last"),
        pytest.param(b"bk_123", (("n" * 10, b"v" * 31),), "headers are 41 bytes, limit is 40", id="header-bytes"),
        pytest.param(b"bk_123", (("\u20ac" * 7, b"v" * 20),), "headers are 41 bytes, limit is 40", id="utf8-name"),
    ],
)
@pytest.mark.usefixtures("no_parsing")
def test_a_key_or_headers_over_their_bounds_are_too_large_and_not_parsed(key: bytes, headers: Any, error: str) -> None:
    r = Record("booking.events", 3, 7, key, json.dumps(body()).encode(), headers)

    d = decode(r, LIMITS)

    check_invariants(d)
    assert (d.outcome, d.reason, d.error, d.message_id) == ("dead_lettered", "too_large", error, None)


@pytest.mark.parametrize(
    ("key", "headers"),
    [
        pytest.param(b"bk_123", (("h", None),) * 3, id="header-count"),
        pytest.param(b"bk_123", (("n" * 10, b"v" * 30),), id="header-bytes"),
        pytest.param(None, (), id="no-key"),
        # At the bounds, then replayed from the DLQ: the two markers `dlq replay` appends do not count (before, such a
        # record came back too_large).
        pytest.param(b"bk_123", (("h", None),) * 3 + REPLAYED, id="header-count-replayed"),
        pytest.param(b"bk_123", (("n" * 10, b"v" * 30), *REPLAYED), id="header-bytes-replayed"),
    ],
)
def test_a_key_and_headers_at_their_bounds_are_fine(key: bytes | None, headers: Any) -> None:
    d = decode(Record("booking.events", 3, 7, key, json.dumps(body()).encode(), headers), LIMITS)

    assert d.outcome == "applied"


def test_a_record_the_client_could_not_read_is_undecodable_before_anything_else() -> None:
    r = record(b"x" * (MAX_BYTES + 1))._replace(unreadable="header 1 name is not UTF-8: b'tr\\xffce'")

    d = decode(r, MAX_BYTES)

    check_invariants(d)
    assert (d.outcome, d.reason, d.message_id) == ("dead_lettered", "undecodable", None)
    assert d.error == "header 1 name is not UTF-8: b'tr\\xffce'"
