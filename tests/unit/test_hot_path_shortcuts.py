"""The shortcuts the hot path takes (issue 15) decide exactly as the plain rules they replace."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from consumer.decode import decode
from consumer.ids import _uuid5
from models.fields import BOOKING_ID_PATTERN, is_booking_id
from tests.unit.builders import MAX_BYTES, body, record

booking_ids = st.from_regex(BOOKING_ID_PATTERN, fullmatch=True)
keys = st.one_of(
    st.none(),
    st.binary(max_size=70),
    booking_ids.map(str.encode),
    st.text(max_size=70).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@given(key=keys, booking_id=booking_ids)
def test_a_key_matches_when_its_bytes_equal_the_booking_id(key: bytes | None, booking_id: str) -> None:
    # decode compares bytes; the rule compares the key's UTF-8 text with booking_id (CONTRACT "Dead letters").
    try:
        differs = key is not None and key.decode("utf-8") != booking_id
    except UnicodeDecodeError:
        differs = True

    d = decode(record(body({"booking_id": booking_id}), key=key), MAX_BYTES)

    assert (d.reason == "key_mismatch") == differs, d.error
    assert d.outcome == ("dead_lettered" if differs else "applied")


@given(a=st.uuids(), b=st.uuids())
def test_a_uuids_int_orders_as_its_text(a: uuid.UUID, b: uuid.UUID) -> None:
    # store.write_decisions sorts learners by session id's int: the lock order that sorting by text gave.
    assert (a.int < b.int) == (str(a) < str(b))


@given(text=st.text(max_size=70))
def test_is_booking_id_is_the_models_rule(text: str) -> None:
    d = decode(record(body({"booking_id": text}), key=None), MAX_BYTES)

    assert is_booking_id(text) == (d.outcome == "applied")


@given(namespace=st.uuids(), name=st.text(max_size=80))
def test_uuid5_is_the_stdlibs(namespace: uuid.UUID, name: str) -> None:
    # consumer.ids derives every session and outbox id with it: the same UUID, or a rebuild changes them all.
    ours = _uuid5(namespace.bytes, name)

    assert ours == uuid.uuid5(namespace, name)
    assert (type(ours), ours.version, str(ours)) == (uuid.UUID, 5, str(uuid.uuid5(namespace, name)))


@given(
    moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    offset_minutes=st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
)
def test_occurred_at_from_json_is_the_same_instant_in_utc(moment: datetime, offset_minutes: int) -> None:
    # The decision compares it with the database's timestamps, which are in UTC: same tzinfo, cheap comparisons.
    written = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    text = written.isoformat()

    d = decode(record(body({"occurred_at": text}), key=None), MAX_BYTES)

    if d.event is None:  # outside the years 1 to 9999 once in UTC: refused, as before
        assert d.reason == "invalid" and "occurred_at" in (d.error or ""), d.error
        return
    assert d.event.occurred_at.tzinfo is UTC
    assert d.event.occurred_at == written
