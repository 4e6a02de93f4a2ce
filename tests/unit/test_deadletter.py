"""Dead letters keep the record unchanged and add the six dlq-* headers; in-batch and cross-batch repeats."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from consumer.deadletter import dead_letter, dead_letters
from consumer.decode import decode, truncate
from consumer.grouping import classify_repeats, group_events, split_repeats
from models.records import Decoded, Record
from tests.unit.builders import MAX_BYTES, body, record

DLQ = "booking.events.dlq"
FAILED_AT = datetime(2026, 11, 24, 11, 15, 0, 123000, tzinfo=timezone(timedelta(hours=1)))
# A null value and an empty one are different on the wire, and stay so on the DLQ (CONTRACT "Dead letters").
HEADERS = (
    ("traceparent", b"00-abc-01"),
    ("x-dup", b"1"),
    ("x-dup", b"2"),
    ("binary", b"\x00\xff"),
    ("null", None),
    ("empty", b""),
)


def dead(
    value: bytes | None,
    key: bytes | None = b"bk_123",
    *,
    reason: str | None = "invalid",
    error: str | None = "booking.duration_minutes: Input should be greater than or equal to 1",
) -> Decoded:
    r = Record("booking.events", 4, 1234567, key, value, HEADERS)
    return Decoded(r, "0" * 64, None, "unknown", None, "dead_lettered", reason=reason, error=error)  # type: ignore[arg-type]


def dlq_headers(reason: bytes, error: bytes) -> tuple[tuple[str, bytes], ...]:
    return (
        ("dlq-reason", reason),
        ("dlq-error", error),
        ("dlq-source-topic", b"booking.events"),
        ("dlq-source-partition", b"4"),
        ("dlq-source-offset", b"1234567"),
        ("dlq-failed-at", b"2026-11-24T10:15:00.123Z"),
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param(b"bk_123", b'{"not": "valid"}', id="bytes"),
        pytest.param(None, None, id="no-key-tombstone"),
        pytest.param(b"\xff\x00key", b"\x00\xff\xfe binary \r\n", id="binary"),
        pytest.param(b"", b"", id="empty"),
    ],
)
def test_the_record_is_copied_unchanged_with_six_dlq_headers_after_the_original_ones(
    key: bytes | None, value: bytes | None
) -> None:
    out = dead_letter(dead(value, key), DLQ, FAILED_AT)

    assert out.topic == DLQ
    assert out.key == key
    assert out.value == value
    assert out.headers == HEADERS + dlq_headers(
        b"invalid", b"booking.duration_minutes: Input should be greater than or equal to 1"
    )


@pytest.mark.parametrize(
    "reason",
    ["invalid", "unsupported_version", "key_mismatch", "message_id_conflict", "too_large", "processing_error"],
)
def test_every_contract_reason_goes_into_dlq_reason(reason: str) -> None:
    out = dead_letter(dead(b"x", reason=reason, error="why"), DLQ, FAILED_AT)

    assert dict(out.headers)["dlq-reason"] == reason.encode()
    assert [name for name, _ in out.headers if name.startswith("dlq-")] == [
        "dlq-reason",
        "dlq-error",
        "dlq-source-topic",
        "dlq-source-partition",
        "dlq-source-offset",
        "dlq-failed-at",
    ]


def test_without_an_error_text_dlq_error_says_the_reason() -> None:
    out = dead_letter(dead(b"x", reason="too_large", error=None), DLQ, FAILED_AT)

    assert dict(out.headers)["dlq-error"] == b"too_large"


def test_without_a_reason_there_is_no_dead_letter() -> None:
    with pytest.raises(ValueError, match=r"booking\.events/4/1234567"):
        dead_letter(dead(b"x", reason=None), DLQ, FAILED_AT)


def test_dlq_failed_at_is_utc_with_z_and_whole_seconds_without_fraction() -> None:
    out = dead_letter(dead(b"x"), DLQ, datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))))

    assert dict(out.headers)["dlq-failed-at"] == b"2025-12-31T22:30:00Z"


@pytest.mark.parametrize("text", ["\u00e9", "\u20ac", "\U0001f600", "a\u00e9\u20ac\U0001f600"])
@pytest.mark.parametrize("shift", [0, 1, 2, 3])
def test_dlq_error_is_cut_to_1_kib_without_breaking_a_character(text: str, shift: int) -> None:
    error = "x" * shift + text * 2000
    out = dead_letter(dead(b"x", error=error), DLQ, FAILED_AT)

    header = dict(out.headers)["dlq-error"]
    assert header is not None
    assert 1020 <= len(header) <= 1024
    decoded = header.decode("utf-8")  # strict: a cut character would raise
    assert decoded.endswith("...")
    assert error.startswith(decoded.removesuffix("..."))


def test_dlq_error_of_exactly_1_kib_is_kept_whole() -> None:
    error = "\u20ac" * 341 + "z"  # 1023 + 1 bytes
    assert len(error.encode()) == 1024

    out = dead_letter(dead(b"x", error=error), DLQ, FAILED_AT)

    assert dict(out.headers)["dlq-error"] == error.encode()
    assert truncate(error) == error
    assert truncate(error + "z") != error + "z"


def test_a_decoded_record_goes_to_the_dlq_with_its_reason_and_error() -> None:
    r = Record("booking.events", 1, 9, b"bk_999", json.dumps(body()).encode(), (("h", b"v"),))
    d = decode(r, MAX_BYTES)

    [out] = dead_letters([d], DLQ, datetime(2026, 11, 24, 10, 15, tzinfo=UTC))

    assert (out.topic, out.key, out.value) == (DLQ, r.key, r.value)
    assert out.headers == (
        ("h", b"v"),
        ("dlq-reason", b"key_mismatch"),
        ("dlq-error", (d.error or "").encode()),
        ("dlq-source-topic", b"booking.events"),
        ("dlq-source-partition", b"1"),
        ("dlq-source-offset", b"9"),
        ("dlq-failed-at", b"2026-11-24T10:15:00Z"),
    )


def test_dead_letters_keeps_the_order() -> None:
    items = [dead(b"a", reason="invalid"), dead(b"b", reason="too_large"), dead(b"c", reason="key_mismatch")]

    outs = dead_letters(items, DLQ, FAILED_AT)

    assert [(o.value, dict(o.headers)["dlq-reason"]) for o in outs] == [
        (b"a", b"invalid"),
        (b"b", b"too_large"),
        (b"c", b"key_mismatch"),
    ]


# --- repeats: in one batch (split_repeats) and against the inbox (classify_repeats) -------------------------------

ID_1 = "00000000-0000-4000-8000-000000000001"
ID_2 = "00000000-0000-4000-8000-000000000002"


def d(message_id: str | None, title: str = "Algebra II", offset: int = 0, booking_id: str = "bk_123") -> Decoded:
    if message_id is None:
        return decode(record(b"not json", offset=offset), MAX_BYTES)
    value = body({"message_id": message_id, "booking.title": title, "booking_id": booking_id})
    return decode(record(value, key=booking_id.encode(), offset=offset), MAX_BYTES)


def test_split_repeats_keeps_the_first_copy_and_sorts_later_ones() -> None:
    first_1 = d(ID_1, "A", 0)
    unreadable_a = d(None, offset=1)
    first_2 = d(ID_2, "B", 2)
    dup_1 = d(ID_1, "A", 3)
    conflict_1 = d(ID_1, "changed", 4)
    unreadable_b = d(None, offset=5)
    dup_2 = d(ID_2, "B", 6)
    dup_1_again = d(ID_1, "A", 7)
    assert unreadable_a.payload_sha256 == unreadable_b.payload_sha256  # same bytes, yet no message id

    firsts, repeats = split_repeats(
        [first_1, unreadable_a, first_2, dup_1, conflict_1, unreadable_b, dup_2, dup_1_again]
    )

    assert [x.record.offset for x in firsts] == [0, 1, 2, 5]
    assert firsts[0] is first_1
    assert [x.record.offset for x in repeats.duplicates] == [3, 6, 7]
    assert [x.record.offset for x in repeats.conflicts] == [4]


def test_split_repeats_compares_against_the_first_copy_not_the_latest() -> None:
    first, conflict, same_as_conflict = d(ID_1, "A", 0), d(ID_1, "B", 1), d(ID_1, "B", 2)

    firsts, repeats = split_repeats([first, conflict, same_as_conflict])

    assert firsts == [first]
    assert repeats.duplicates == []
    assert repeats.conflicts == [conflict, same_as_conflict]


def test_split_repeats_of_nothing() -> None:
    firsts, repeats = split_repeats([])

    assert (firsts, repeats.duplicates, repeats.conflicts) == ([], [], [])


def test_classify_repeats_against_the_inbox_hashes() -> None:
    same, other = d(ID_1, "A", 0), d(ID_2, "B", 1)
    known = {same.message_id: same.payload_sha256, other.message_id: d(ID_2, "changed").payload_sha256}

    repeats = classify_repeats([same, other], known)  # type: ignore[arg-type]

    assert repeats.duplicates == [same]
    assert repeats.conflicts == [other]


def test_group_events_per_booking_in_batch_order_skipping_what_is_not_applied() -> None:
    a1, b1, bad, a2 = d(ID_1, "A", 0, "bk_a"), d(ID_2, "B", 1, "bk_b"), d(None, offset=2), d(ID_2, "C", 3, "bk_a")
    ignored = decode(record(body({"type": "BookingRescheduled"})), MAX_BYTES)

    groups = group_events([a1, b1, bad, ignored, a2])

    assert list(groups) == ["bk_a", "bk_b"]
    assert groups["bk_a"] == [a1.event, a2.event]
    assert groups["bk_b"] == [b1.event]


def test_to_record_keeps_null_header_values_and_the_record_timestamp() -> None:
    from aiokafka import ConsumerRecord

    from consumer.client import to_record

    message = ConsumerRecord(
        "booking.events", 2, 40, 1764000000123, 0, b"bk_1", b"{}", None, 4, 2, (("null", None), ("empty", b""))
    )

    r = to_record(message)

    assert r == Record("booking.events", 2, 40, b"bk_1", b"{}", (("null", None), ("empty", b"")), 1764000000123)
    out = dead_letter(decode(r, MAX_BYTES), DLQ, FAILED_AT)
    assert out.headers[:2] == (("null", None), ("empty", b""))
