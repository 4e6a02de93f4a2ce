"""Instants finer than a microsecond (RFC 3339 allows any number of fraction digits; datetime and timestamptz keep
six): ``PreciseDatetime`` orders them as the exact instants, ``decode`` keeps an occurred_at's extra digits, and
``decide`` orders snapshots and cancellations by them before the message id (CONTRACT "What each event does": the
newest occurred_at; a newcomer's find: the newer snapshot with the smaller message id lost)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.decide import decide
from consumer.decode import decode
from models.events import BookingEvent
from models.fields import PreciseDatetime, beyond_microseconds, digits_beyond_microseconds
from tests.unit.builders import body, record
from tests.unit.decisions import NOW, link_for

BASE = datetime(2026, 11, 24, 10, 15, tzinfo=UTC)


def exact(moment: datetime) -> Decimal:
    """The instant as an exact number of seconds after BASE."""
    return Decimal((moment - BASE) // timedelta(microseconds=1)) / 10**6 + Decimal(
        "0.000000" + beyond_microseconds(moment)
    )


instants = st.builds(
    lambda us, digits: PreciseDatetime.of(BASE + timedelta(microseconds=us), digits.rstrip("0")),
    st.integers(0, 3),
    st.text("0123456789", max_size=4),
)


@given(instants, instants)
def test_precise_instants_compare_as_the_exact_instants_do(a: datetime, b: datetime) -> None:
    assert (a < b, a == b, a > b, a <= b, a >= b, a != b) == (
        exact(a) < exact(b), exact(a) == exact(b), exact(a) > exact(b),
        exact(a) <= exact(b), exact(a) >= exact(b), exact(a) != exact(b),
    )  # fmt: skip
    plain = b.replace(tzinfo=UTC)  # a datetime of the same microsecond, without the digits
    assert (a < plain) == (exact(a) < exact(plain)) and (plain < a) == (exact(plain) < exact(a))
    assert (a == plain) == (exact(a) == exact(plain)) and (a, UUID(int=1)) < (a, UUID(int=2))


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("2026-11-24T10:15:00Z", ""),
        ("2026-11-24T10:15:00.123456Z", ""),
        ("2026-11-24T10:15:00.1234560000+01:00", ""),
        ("2026-11-24T10:15:00.0000004Z", "4"),
        ("2026-11-24T10:15:00.123456789-05:00", "789"),
        ("2026-11-24T10:15:00.00000001020Z", "0102"),
    ],
)
def test_the_digits_past_the_microsecond_are_those_of_the_text(text: str, digits: str) -> None:
    assert digits_beyond_microseconds(text) == digits


def decoded_at(occurred_at: str, **changes: object) -> BookingEvent:
    found = decode(record(body({"occurred_at": occurred_at, **changes})), 64 * 1024)
    assert found.outcome == "applied" and found.event is not None
    return found.event


def test_decode_keeps_an_occurred_at_finer_than_a_microsecond() -> None:
    finer = decoded_at("2026-11-24T11:15:00.000000400+01:00")
    assert type(finer.occurred_at) is PreciseDatetime and beyond_microseconds(finer.occurred_at) == "4"
    assert finer.occurred_at > decoded_at("2026-11-24T10:15:00Z").occurred_at
    # Other values: a plain datetime, whatever else in the value has many digits.
    for plain in (
        decoded_at("2026-11-24T10:15:00.1234560Z"),
        decoded_at("2026-11-24T10:15:00Z", title="pi 3.14159265"),
    ):
        assert type(plain.occurred_at) is datetime


def test_the_newer_snapshot_wins_by_its_instant_in_any_order_of_any_batches() -> None:
    older = decoded_at("2026-11-24T10:15:00.000000000Z", message_id=str(UUID(int=2)), **{"booking.title": "Older"})
    newer = decoded_at("2026-11-24T10:15:00.000000400Z", message_id=str(UUID(int=1)), **{"booking.title": "Newer"})
    for events in itertools.permutations([older, newer]):
        assert decide(None, list(events), link_for, NOW).session.details.title == "Newer"  # type: ignore[union-attr]
        row = None
        for one in events:  # one batch each, on the row the last one wrote
            row = decide(row, [one], link_for, NOW).session or row
        assert row is not None and row.details.title == "Newer"


def test_the_earlier_cancellation_stays_by_its_instant_in_any_order_of_any_batches() -> None:
    cancel = {"type": "BookingCancelled"}
    earlier = decoded_at(
        "2026-11-24T10:15:00.00000005Z", message_id=str(UUID(int=2)), cancellation_reason="first", **cancel
    )
    later = decoded_at(
        "2026-11-24T10:15:00.0000001Z", message_id=str(UUID(int=1)), cancellation_reason="second", **cancel
    )
    for events in itertools.permutations([earlier, later]):
        row = decide(None, list(events), link_for, NOW).session
        assert row is not None and row.cancellation is not None and row.cancellation.reason == "first"
        row = None
        for one in events:
            row = decide(row, [one], link_for, NOW).session or row
        assert row is not None and row.cancellation is not None and row.cancellation.reason == "first"


@pytest.mark.parametrize("escaped", ["2026-11-24T10:15:00\\u002e0000004Z", "2026-11-24T10:15:00.000000\\u0034Z"])
def test_digits_spelled_with_json_escapes_count_too(escaped: str) -> None:
    # A newcomer's find: the bytes were searched for a point and seven digits, which an escape hides.
    value = json.dumps(body({"occurred_at": "PLACEHOLDER"})).replace("PLACEHOLDER", escaped).encode()
    found = decode(record(value), 64 * 1024)
    assert found.event is not None and beyond_microseconds(found.event.occurred_at) == "4"
