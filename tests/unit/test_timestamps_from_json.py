"""The timestamp rules run twice in models.events: as Python validators (Python input) and in pydantic-core (JSON
text, the consumer's path). Both must give one verdict for any text: the same datetime, or a refusal with the same
message (CONTRACT "Input": RFC 3339 with an offset, in UTC within the years 1 to 9999, a session start within
1970-01-01 and 9999-01-01)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from models.fields import Rfc3339, SessionStart, UtcRfc3339

ADAPTERS = {
    "occurred_at": TypeAdapter(Rfc3339),
    # As BookingEvent reads it: the same rules, and from JSON the instant in the standard library's UTC.
    "occurred_at in UTC": TypeAdapter(UtcRfc3339),
    "scheduled_start": TypeAdapter(SessionStart),
}
IN_UTC_FROM_JSON = {"occurred_at in UTC"}
# Where the Python validator's own parse (datetime.fromisoformat) refuses first, it says only this; pydantic's
# parse, which refuses the same texts, says what is wrong (a month 13, a day 32). The verdict is the same.
PYTHON_PARSE_REFUSED = ("Value error, is not a valid timestamp",)

Verdict = tuple[str, datetime | None, tuple[str, ...]]


def _verdict(validate: object, value: object) -> Verdict:
    assert callable(validate)
    try:
        moment = validate(value)
    except ValidationError as error:
        return ("refused", None, tuple(e["msg"] for e in error.errors()))
    assert isinstance(moment, datetime)
    return ("accepted", moment, ())


def assert_one_verdict(field: str, value: object) -> None:
    adapter = ADAPTERS[field]
    python = _verdict(adapter.validate_python, value)
    from_json = _verdict(adapter.validate_json, json.dumps(value))

    assert python[0] == from_json[0], (value, python, from_json)
    if python[0] == "accepted":
        assert python[1] == from_json[1] and python[1] is not None and from_json[1] is not None
        if field in IN_UTC_FROM_JSON:
            assert from_json[1].tzinfo is UTC, (value, from_json)
        else:
            assert python[1].utcoffset() == from_json[1].utcoffset()
    elif python[2] != PYTHON_PARSE_REFUSED:
        assert python[2] == from_json[2], value


def _pick(*choices: str) -> st.SearchStrategy[str]:
    return st.sampled_from(choices)


# Texts that pass the RFC 3339 pattern or nearly do, around every bound the rules draw.
near_bounds = st.builds(
    lambda *parts: "{}-{}-{}{}{}:{}:{}{}{}".format(*parts),
    _pick("0000", "0001", "0002", "1969", "1970", "1971", "2026", "9997", "9998", "9999"),
    _pick("00", "01", "02", "12", "13"),
    _pick("00", "01", "28", "29", "30", "31", "32"),
    _pick("T", "t", " ", "_"),
    _pick("00", "01", "23", "24"),
    _pick("00", "59", "60"),
    _pick("00", "59", "60", "5"),
    _pick("", ".1", ".999999", ".9999999", ".1234567890123", "."),
    _pick("Z", "z", "+00:00", "-00:00", "+00:01", "-00:01", "-12:00", "+14:00", "+23:59", "+24:00", "", "+0100"),
)
anything = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40), near_bounds
)


@pytest.mark.parametrize("field", sorted(ADAPTERS))
@settings(max_examples=600, deadline=None)
@given(value=near_bounds)
def test_text_near_every_bound_gets_one_verdict(field: str, value: str) -> None:
    assert_one_verdict(field, value)


@pytest.mark.parametrize("field", sorted(ADAPTERS))
@given(value=anything)
def test_any_json_value_gets_one_verdict(field: str, value: object) -> None:
    assert_one_verdict(field, value)


OUTSIDE_UTC = (
    "Value error, must be after 0001-01-01T00:00:00Z and before 9999-12-31T23:59:59.999999Z once converted to UTC"
)
OUTSIDE_START = "Value error, must be between 1970-01-01 and 9999-01-01 in UTC"
NOT_RFC3339 = "Value error, must be an RFC 3339 timestamp with an offset, e.g. 2026-11-24T10:15:00Z"
LEAP_SECOND = "Value error, has seconds 60 (a leap second), which no stored timestamp can hold"


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        ("occurred_at", "9999-12-31T23:59:59-12:00", OUTSIDE_UTC),
        ("occurred_at", "0001-01-01T00:00:00+00:01", OUTSIDE_UTC),
        # The very first and last instants: asyncpg would store them as -infinity and infinity.
        ("occurred_at", "0001-01-01T00:00:00Z", OUTSIDE_UTC),
        ("occurred_at", "0001-01-01T01:00:00+01:00", OUTSIDE_UTC),
        ("occurred_at", "9999-12-31T23:59:59.999999Z", OUTSIDE_UTC),
        ("occurred_at", "9999-12-31T22:59:59.999999-01:00", OUTSIDE_UTC),
        ("scheduled_start", "1969-12-31T23:59:59Z", OUTSIDE_START),
        ("scheduled_start", "9999-01-01T00:00:01Z", OUTSIDE_START),
        ("occurred_at", "1764000000", NOT_RFC3339),
        ("scheduled_start", "2026-12-01T16:00:00", NOT_RFC3339),
        ("occurred_at", "2016-12-31T23:59:60Z", LEAP_SECOND),
        ("scheduled_start", "2016-12-31T23:59:60.5+00:00", LEAP_SECOND),
    ],
)
def test_the_json_path_says_what_the_python_validators_say(field: str, text: str, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ADAPTERS[field].validate_json(json.dumps(text))

    assert [e["msg"] for e in refused.value.errors()] == [message]
    assert_one_verdict(field, text)
