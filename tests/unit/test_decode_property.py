"""decode() over any record (Hypothesis): any bytes, any key, any header names and values (null ones too, many of
them), any JSON, any timestamps. Every record is applied, ignored or dead-lettered with a contract reason, nothing
raises, and whatever would be written to PostgreSQL (applied or ignored rows, inbox rows of dead letters) is
storable there: no U+0000 or other control character, valid UTF-8, timestamps inside the years 1 to 9999 in UTC."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, get_args

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from consumer.decode import Limits, decode
from models.errors import DlqReason
from models.fields import EARLIEST_START, LATEST_START
from models.records import Decoded, Record
from tests.unit.builders import example
from tests.unit.decode_checks import check_invariants

REASONS = set(get_args(DlqReason))
LIMITS = Limits(value_bytes=4096, key_bytes=256, header_count=40, header_bytes=2048)

PATHS = [
    "message_id",
    "type",
    "schema_version",
    "occurred_at",
    "booking_id",
    "booking",
    "booking.student_id",
    "booking.instructor_id",
    "booking.scheduled_start",
    "booking.duration_minutes",
    "booking.title",
    "auto_approved",
    "cancellation_reason",
    "extra",
]

# Text the way a hostile producer writes it: every code point JSON can carry, control characters included.
any_text = st.text(st.characters(codec="utf-8"), max_size=80)
timestamps = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(lambda d: d.isoformat())
offsets = st.sampled_from(["Z", "+00:00", "-12:00", "+14:00", "+05:30", ""])
rfc3339ish = st.builds(lambda t, o: t + o, timestamps, offsets)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    any_text,
    rfc3339ish,
    st.sampled_from(["BookingApproved", "BookingConfirmed", "BookingCancelled", "BookingCancelled\x00", "bk_123"]),
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4), max_leaves=12
)


def _mutated(changes: dict[str, Any]) -> dict[str, Any]:
    body = example()
    for path, value in changes.items():
        *parents, last = path.split(".")
        target: Any = body
        for part in parents:
            target = target.get(part) if isinstance(target, dict) else None
        if isinstance(target, dict):
            target[last] = value
    return body


mutated_bodies = st.dictionaries(st.sampled_from(PATHS), json_values, max_size=4).map(_mutated)
# Mostly near-valid events, so that applied and ignored records are drawn often, not only garbage.
one_field = st.dictionaries(st.sampled_from(PATHS), scalars, max_size=1).map(_mutated)
values = st.one_of(
    one_field.map(lambda b: json.dumps(b).encode()),
    one_field.map(lambda b: json.dumps(b).encode()),
    one_field.map(lambda b: json.dumps({**b, "type": "BookingRescheduled"}).encode()),
    st.none(),
    st.binary(max_size=300),
    st.binary(min_size=LIMITS.value_bytes - 2, max_size=LIMITS.value_bytes + 2),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated_bodies.map(lambda b: json.dumps(b).encode()),
    mutated_bodies.map(lambda b: json.dumps(b, ensure_ascii=False).encode("utf-8", "surrogatepass")),
)
header = st.tuples(any_text, st.none() | st.binary(max_size=100))
headers = st.one_of(
    st.lists(header, max_size=4),
    st.lists(header, max_size=4),
    st.lists(header, min_size=LIMITS.header_count - 5, max_size=LIMITS.header_count + 5),
).map(tuple)
keys = st.one_of(st.just(b"bk_123"), st.just(b"bk_123"), st.none(), st.binary(max_size=LIMITS.key_bytes + 10))
NOW_MS = 1_800_000_000_000
record_times = st.one_of(st.none(), st.just(NOW_MS), st.integers(min_value=-1, max_value=253402300799999))
unreadables = st.one_of(st.none(), st.none(), st.none(), st.none(), any_text)


def storable_text(text: str | None) -> None:
    if text is None:
        return
    text.encode("utf-8")  # strict: a lone surrogate would raise
    assert not any((c < " " and c != "\t") or c == "\x7f" for c in text), repr(text)


def storable(d: Decoded) -> None:
    """What the inbox and session rows would hold is what PostgreSQL accepts."""
    if d.message_id is not None:  # an inbox row will be written
        storable_text(d.event_type)
        storable_text(d.booking_id)
    if d.event is None:
        return
    booking = d.event.booking
    texts = (d.event.booking_id, d.event.type, booking.student_id, booking.instructor_id, booking.title)
    for text in (*texts, d.event.cancellation_reason):
        storable_text(text)
    for moment in (d.event.occurred_at, booking.scheduled_start):
        moment.astimezone(UTC)  # raises OverflowError outside the years 1 to 9999 in UTC
    assert EARLIEST_START <= booking.scheduled_start <= LATEST_START
    if d.record.timestamp_ms is not None and d.record.timestamp_ms >= 0:
        assert d.event.occurred_at.timestamp() * 1000 <= d.record.timestamp_ms + LIMITS.clock_skew_s * 1000


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(value=values, key=keys, headers=headers, timestamp_ms=record_times, unreadable=unreadables)
def test_any_record_is_applied_ignored_or_dead_lettered_and_storable(
    value: bytes | None, key: bytes | None, headers: Any, timestamp_ms: int | None, unreadable: str | None
) -> None:
    d = decode(Record("booking.events", 0, 1, key, value, headers, timestamp_ms, unreadable or None), LIMITS)
    event(d.reason or d.outcome)

    check_invariants(d)
    assert d.outcome in ("applied", "ignored", "dead_lettered")
    assert d.outcome != "dead_lettered" or d.reason in REASONS
    storable(d)
