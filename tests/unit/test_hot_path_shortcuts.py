"""The shortcuts the hot path takes (issue 15) decide exactly as the plain rules they replace."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from consumer.decode import decode
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
