"""decode(): the key and the value as bytes (CONTRACT.md's input table): a key that differs from booking_id, the
size limit checked before any parsing, values that are no JSON object, payload_sha256 over the bytes as sent."""

from __future__ import annotations

import hashlib
import json
from uuid import UUID

import pytest

from consumer.decode import decode
from tests.unit.builders import BOOKING_ID, MAX_BYTES, MESSAGE_ID, body, record
from tests.unit.decode_checks import (
    MID,
    check_invariants,
    no_parsing,  # noqa: F401 (a fixture)
)

# --- key ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [pytest.param(None, id="absent"), pytest.param(b"bk_123", id="equal")])
def test_an_absent_or_equal_key_is_fine(key: bytes | None) -> None:
    d = decode(record(body(), key=key), MAX_BYTES)

    assert (d.outcome, d.reason, d.booking_id) == ("applied", None, BOOKING_ID)


@pytest.mark.parametrize(
    ("key", "mentions"),
    [
        pytest.param(b"bk_999", "bk_999", id="different"),
        pytest.param(b"BK_123", "BK_123", id="different-case"),
        pytest.param(b"bk_123 ", "bk_123 ", id="trailing-space"),
        pytest.param(b"", "booking_id", id="empty"),
        pytest.param(b"\xff\xfebk_123", "UTF-8", id="not-utf8"),
        pytest.param(b"bk_\xc3", "UTF-8", id="truncated-utf8"),
        pytest.param(b"\n" * 1000, "booking_id", id="long-control-characters"),
    ],
)
def test_a_key_that_differs_from_booking_id_is_key_mismatch(key: bytes, mentions: str) -> None:
    d = decode(record(body(), key=key), MAX_BYTES)

    check_invariants(d)
    assert (d.outcome, d.reason) == ("dead_lettered", "key_mismatch")
    assert (d.message_id, d.event_type, d.booking_id) == (MID, "BookingConfirmed", BOOKING_ID)
    assert mentions in (d.error or "")
    assert "bk_123" in (d.error or "")


# --- the value as bytes ---------------------------------------------------------------------------------------


def test_a_value_over_the_limit_is_too_large_even_when_not_json() -> None:
    value = b"\x00not json" * (70 * 1024 // 9 + 1)
    assert len(value) > 70 * 1024 - 9
    d = decode(record(value), MAX_BYTES)

    check_invariants(d)
    assert (d.outcome, d.reason, d.message_id) == ("dead_lettered", "too_large", None)
    assert d.error == f"value is {len(value)} bytes, limit is {MAX_BYTES}"
    assert d.payload_sha256 == hashlib.sha256(value).hexdigest()


def _padded(size: int) -> bytes:
    """The valid example padded with an unknown field to exactly ``size`` bytes."""
    bare = json.dumps(body({"pad": ""})).encode()
    value = json.dumps(body({"pad": "p" * (size - len(bare))})).encode()
    assert len(value) == size
    return value


def test_a_valid_value_of_exactly_the_limit_is_applied_and_one_byte_more_is_too_large() -> None:
    assert decode(record(_padded(MAX_BYTES)), MAX_BYTES).outcome == "applied"

    d = decode(record(_padded(MAX_BYTES + 1)), MAX_BYTES)
    assert (d.outcome, d.reason) == ("dead_lettered", "too_large")
    assert d.message_id is None  # not even the envelope was read


@pytest.mark.usefixtures("no_parsing")
def test_a_value_over_the_limit_is_not_parsed() -> None:
    d = decode(record(_padded(2000)), 1999)

    assert (d.outcome, d.reason) == ("dead_lettered", "too_large")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param(None, "invalid", id="tombstone"),
        pytest.param(b"", "invalid", id="empty"),
        pytest.param(b"not json", "invalid", id="not-json"),
        pytest.param(b"{", "invalid", id="truncated-json"),
        pytest.param(b"[]", "invalid", id="array"),
        pytest.param(json.dumps([body()]).encode(), "invalid", id="array-of-event"),
        pytest.param(b"null", "invalid", id="null"),
        pytest.param(b'"text"', "invalid", id="string"),
        pytest.param(b"\xff\xfe{}", "invalid", id="not-utf8"),
        pytest.param(json.dumps(body()).encode("utf-16"), "invalid", id="utf16"),
    ],
)
def test_an_unreadable_value_is_invalid(value: bytes | None, reason: str) -> None:
    d = decode(record(value), MAX_BYTES)

    check_invariants(d)
    assert (d.outcome, d.reason, d.message_id, d.booking_id) == ("dead_lettered", reason, None, None)
    assert d.error is not None
    assert "value" in d.error


def _titled(raw: bytes) -> bytes:
    """The contract's example event with ``raw`` as the bytes of its title's text."""
    return json.dumps(body({"booking.title": "TITLE"})).encode().replace(b'"TITLE"', b'"' + raw + b'"')


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"\xef\xbb\xbf" + json.dumps(body()).encode(), id="byte-order-mark"),
        pytest.param(_titled(b"a\xffb"), id="not-utf8-in-a-string"),
        pytest.param(_titled(b"a\x00b"), id="raw-nul-in-a-string"),
        pytest.param(_titled(b"a\nb"), id="raw-newline-in-a-string"),
    ],
)
def test_a_value_no_strict_parser_reads_is_invalid_under_its_readable_message_id(value: bytes) -> None:
    # A newcomer's find: such a record had no inbox row, so a corrected copy under its id was applied, where the
    # corrected copy of any other dead letter (a title with the escape \u0000, say) is a message_id_conflict.
    d = decode(record(value), MAX_BYTES)

    check_invariants(d)
    assert (d.outcome, d.reason, d.message_id) == ("dead_lettered", "invalid", MID)
    assert (d.booking_id, d.event_type) == (BOOKING_ID, "BookingConfirmed")
    assert d.error is not None and d.error.startswith("value: "), d.error


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(json.dumps(body()).encode(), id="applied"),
        pytest.param(json.dumps(body({"booking.duration_minutes": 0})).encode(), id="invalid"),
        pytest.param(json.dumps(body({"type": "BookingRescheduled"})).encode(), id="ignored"),
        pytest.param(b"x" * (MAX_BYTES + 1), id="too-large"),
        pytest.param(b"\xff", id="binary"),
    ],
)
def test_payload_sha256_is_the_hex_sha256_of_the_value_bytes(value: bytes) -> None:
    d = decode(record(value), MAX_BYTES)

    assert d.payload_sha256 == hashlib.sha256(value).hexdigest()
    assert len(d.payload_sha256) == 64


def test_payload_sha256_of_a_tombstone_is_that_of_no_bytes() -> None:
    assert decode(record(None), MAX_BYTES).payload_sha256 == hashlib.sha256(b"").hexdigest()


def test_the_same_event_with_other_whitespace_hashes_differently() -> None:
    compact = json.dumps(body(), separators=(",", ":")).encode()
    spaced = json.dumps(body(), indent=2).encode()

    a, b = decode(record(compact), MAX_BYTES), decode(record(spaced), MAX_BYTES)

    assert a.message_id == b.message_id == MID
    assert a.payload_sha256 != b.payload_sha256


def test_the_record_is_kept_unchanged() -> None:
    r = record(body({"booking.duration_minutes": 0}), key=b"k", headers=(("h", b"v"),))

    assert decode(r, MAX_BYTES).record is r


def test_message_id_hint_reads_the_first_message_id_of_the_raw_bytes() -> None:
    from consumer.decode import message_id_hint

    assert message_id_hint(b'{"message_id": "7d0c1d3e-2a51-4a8e-9d35-0b1f0a6d2c11", "x": 1}') == UUID(MESSAGE_ID)
    assert message_id_hint(b'{"message_id":"7D0C1D3E2A514A8E9D350B1F0A6D2C11"}') == UUID(MESSAGE_ID)
    assert message_id_hint(b'{"message_id": "not-a-uuid-at-all-but-long-enough-x"}') is None
    assert message_id_hint(b'{"id": "7d0c1d3e-2a51-4a8e-9d35-0b1f0a6d2c11"}') is None
    assert message_id_hint(None) is None
    assert message_id_hint(b"") is None
