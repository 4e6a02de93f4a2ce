"""decode() of JSON that RFC 8259 allows but pydantic-core's parser refuses: a lone surrogate escape, nesting past
the parser's 200 levels (CONTRACT "Input": unknown extra fields are accepted and ignored; every dead-lettered
message id is recorded). Found by trying: both used to be ``invalid`` without a message id, so every copy of such
a record was dead-lettered again."""

from __future__ import annotations

import json
from typing import Any

import pytest

from consumer.decode import decode
from tests.unit.builders import MAX_BYTES, body, record
from tests.unit.decode_checks import KEEP, MID, assert_invalid, check_invariants

SURROGATE = "\\ud800"  # as written in the JSON text: six characters


def with_field(event: dict[str, Any], raw: str) -> bytes:
    """``event`` as JSON with one more member written verbatim (``"name": raw``) before its closing brace."""
    text = json.dumps(event)
    return (text[:-1] + ", " + raw + "}").encode()


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_a_lone_surrogate_in_an_unknown_field_is_ignored_with_it() -> None:
    expected = decode(record(body()), MAX_BYTES)
    d = decode(record(with_field(body(), f'"note": "x{SURROGATE}y"')), MAX_BYTES)
    check_invariants(d)
    assert d.outcome == "applied", d.error
    assert d.event == expected.event
    assert d.message_id == MID


@pytest.mark.parametrize("levels", [201, 300, 800])
def test_an_unknown_field_nested_past_the_parsers_bound_is_ignored(levels: int) -> None:
    d = decode(record(with_field(body(), f'"extra": {nested(levels)}')), MAX_BYTES)
    assert d.outcome == "applied", d.error
    assert d.message_id == MID


def test_nesting_past_the_interpreters_recursion_limit_is_invalid_not_a_crash() -> None:
    d = decode(record(with_field(body(), f'"extra": {nested(20_000)}')), MAX_BYTES)
    assert_invalid(d, "recursion limit", message_id=None)


@pytest.mark.parametrize(
    ("path", "message_id"),
    [
        ("type", MID),
        ("booking_id", MID),
        ("occurred_at", MID),
        ("cancellation_reason", MID),
        ("booking.student_id", MID),
        ("booking.instructor_id", MID),
        ("booking.scheduled_start", MID),
        ("booking.title", MID),
        ("message_id", None),
    ],
)
def test_a_lone_surrogate_in_a_stored_field_is_invalid_under_the_message_id(path: str, message_id: Any) -> None:
    marker = "@@"
    value = json.dumps(body({path: marker})).replace(f'"{marker}"', f'"a{SURROGATE}b"').encode()
    d = decode(record(value), MAX_BYTES)
    assert_invalid(d, f"{path}: contains a lone surrogate (U+D800 at character 1)", message_id=message_id)
    if path != "type":
        assert d.event_type == "BookingConfirmed"
    if path != "booking_id":
        assert d.booking_id == "bk_123"


def test_two_copies_of_such_a_record_carry_one_message_id_so_the_second_is_a_duplicate() -> None:
    value = json.dumps(body({"booking.title": "@@"})).replace('"@@"', f'"{SURROGATE}"').encode()
    first, second = decode(record(value, offset=1), MAX_BYTES), decode(record(value, offset=2), MAX_BYTES)
    assert first.message_id == second.message_id == MID
    assert first.payload_sha256 == second.payload_sha256


def test_a_newer_schema_with_a_lone_surrogate_is_unsupported_version() -> None:
    value = json.dumps(body({"schema_version": 2, "booking.title": "@@"})).replace('"@@"', f'"{SURROGATE}"')
    d = decode(record(value.encode()), MAX_BYTES)
    check_invariants(d)
    assert (d.reason, d.message_id) == ("unsupported_version", MID)


def test_an_unknown_type_with_a_lone_surrogate_in_its_body_is_ignored() -> None:
    value = json.dumps(body({"type": "BookingRescheduled", "booking.title": "@@"})).replace('"@@"', f'"{SURROGATE}"')
    d = decode(record(value.encode()), MAX_BYTES)
    check_invariants(d)
    assert (d.outcome, d.event_type, d.message_id) == ("ignored", "BookingRescheduled", MID)


def test_a_nested_value_in_a_stored_field_is_invalid_under_the_message_id() -> None:
    value = json.dumps(body({"booking.title": "@@"})).replace('"@@"', nested(300))
    d = decode(record(value.encode()), MAX_BYTES)
    assert_invalid(d, "booking.title", message_id=MID)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        pytest.param(b"\xef\xbb\xbf" + json.dumps(body()).encode(), "Invalid JSON", id="byte-order-mark"),
        pytest.param(with_field(body(), f'"note": "{SURROGATE}", "n": NaN'), "Invalid JSON", id="nan-too"),
        pytest.param(
            with_field(body(), '"note": "\xff"').replace(b"\xc3\xbf", b"\xff"), "Invalid JSON", id="not-utf-8"
        ),
        pytest.param(b'{"message_id": "' + SURROGATE.encode() + b'"', "Invalid JSON", id="not-json-either"),
    ],
)
def test_what_the_standard_library_refuses_too_stays_invalid(value: bytes, says: str) -> None:
    d = decode(record(value), MAX_BYTES)
    assert_invalid(d, says, message_id=KEEP)
