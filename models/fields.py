"""The contract's field types (CONTRACT "Input"): stored text without control characters, booking ids, and
RFC 3339 timestamps checked in pydantic-core for JSON input, written back in UTC. ``models.events`` builds the
events from them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, TypeGuard

from pydantic import (
    AwareDatetime,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

# C0 control characters other than tab, and DEL. U+0000 among them: PostgreSQL text cannot hold it at all, so a
# record carrying one would fail in the database and be blamed on it; the others would reach rows, SessionCreated
# and operators' terminals (CONTRACT "Input": no stored string may contain U+0000; issue 16: nor other controls).
# Checked by pydantic-core's own regex engine: a Python validator per string field cost more than the rest of
# the parse. ``control_character`` turns its mismatch into a message naming the character.
NO_CONTROL_PATTERN = r"^[^\x00-\x08\x0a-\x1f\x7f]*$"
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def control_character(text: str) -> str | None:
    """Why ``text`` cannot be stored, naming the character and its place, never echoing the text; None: it can."""
    found = _CONTROL.search(text)
    if found is None:
        return None
    return f"must not contain control characters (U+{ord(found.group()):04X} at character {found.start()})"


# The one string type for every field that reaches a row or an output event: use it for any new one
# (``cancellation_reason: ShortText | None``), so validation keeps refusing what PostgreSQL would refuse.
StoredText = Annotated[str, StringConstraints(pattern=NO_CONTROL_PATTERN)]
ShortText = Annotated[StoredText, StringConstraints(max_length=200)]  # titles, reasons
# CONTRACT "Input": booking_id is 1 to 64 characters of [A-Za-z0-9_.:-]; no control character fits.
BOOKING_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
BookingId = Annotated[str, StringConstraints(pattern=BOOKING_ID_PATTERN)]
_BOOKING_ID = re.compile(BOOKING_ID_PATTERN)


def is_booking_id(value: object) -> TypeGuard[str]:
    """True when ``value`` is a well-formed booking id (``BookingId``'s rule, CONTRACT "Input"), for text that was
    not validated as one (an envelope's ``booking_id``, of any JSON shape)."""
    return isinstance(value, str) and _BOOKING_ID.fullmatch(value) is not None


UserId = Annotated[StoredText, StringConstraints(min_length=1, max_length=64)]
# CONTRACT "Input": an unknown type is "any other string", recorded as ignored: any length (the value's own bound
# holds), empty too; only what cannot be stored is not.
EventTypeName = StoredText


def rfc3339_utc(moment: datetime) -> str:
    """UTC with a ``Z``; milliseconds only when there are any, as the contract's examples show."""
    utc = moment.astimezone(UTC)
    spec = "milliseconds" if utc.microsecond >= 1000 else "seconds"  # no ".000" for a few microseconds
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


_NOT_RFC3339 = "must be an RFC 3339 timestamp with an offset, e.g. 2026-11-24T10:15:00Z"
# The first and last instants of the years 1 to 9999 are refused too: asyncpg writes exactly those two as PostgreSQL's
# -infinity and infinity and reads them back as naive datetimes, which no comparison with an aware one survives (an
# event dated 0001-01-01T00:00:00Z made its session's every later event fail).
_OUTSIDE_UTC_YEARS = "must be after 0001-01-01T00:00:00Z and before 9999-12-31T23:59:59.999999Z once converted to UTC"
_OUTSIDE_START_RANGE = "must be between 1970-01-01 and 9999-01-01 in UTC"
# RFC 3339 allows a leap second; Python's datetime and PostgreSQL's timestamptz cannot hold one. Said as such, where
# the parser's own message ("unexpected extra characters") hid it (a newcomer's find).
_LEAP_SECOND = "has seconds 60 (a leap second), which no stored timestamp can hold"
_NOT_LEAP_SECOND = r"^.{17}(?:[0-5]\d|6[1-9]|[7-9]\d)"  # the seconds of a text the _RFC3339 pattern matched
_FIRST_UTC = datetime(1, 1, 1, tzinfo=UTC)
_LAST_UTC = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339_text(value: object) -> object:
    """Pydantic also reads "1764000000" as Unix time; the contract wants RFC 3339 text with an offset. And the
    instant must exist in UTC: ``9999-12-31T23:59:59-12:00`` parses, but is year 10000 in UTC, which no row or
    output event can hold. Only a year 1 or 9999 can overflow, so only those are converted here: a Python
    validator after pydantic's parse would cost more than the parse of the field."""
    if isinstance(value, datetime):
        _in_utc(value)  # built in Python (the producer), not parsed from text
        return value
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise ValueError(_NOT_RFC3339)
    if value[17:19] == "60":
        raise ValueError(_LEAP_SECOND)
    if value[:4] in ("0001", "9999"):
        _in_utc(_parse(value))
    return value


EARLIEST_START = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_START = datetime(9999, 1, 1, tzinfo=UTC)


def _session_start_text(value: object) -> object:
    """``_rfc3339_text``, and between 1970-01-01 and 9999-01-01 in UTC (CONTRACT); only the years next to the
    bounds need the instant itself."""
    value = _rfc3339_text(value)
    moment = value if isinstance(value, datetime) else None
    year = moment.year if moment is not None else int(str(value)[:4])
    if 1970 < year < 9998:
        return value
    if not EARLIEST_START <= _in_utc(moment or _parse(str(value))) <= LATEST_START:
        raise ValueError(_OUTSIDE_START_RANGE)
    return value


def _parse(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.upper())  # the pattern allows "t" and "z"
    except ValueError:
        raise ValueError("is not a valid timestamp") from None


def _in_utc(moment: datetime) -> datetime:
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(_OUTSIDE_UTC_YEARS) from None
    if not _FIRST_UTC < utc < _LAST_UTC:
        raise ValueError(_OUTSIDE_UTC_YEARS)
    return utc


class PreciseDatetime(datetime):
    """An instant finer than a microsecond, as RFC 3339 allows and ``datetime`` and PostgreSQL's timestamptz cannot
    hold: the datetime (to the microsecond) and ``beyond_us``, the decimal digits of the second's fraction past the
    sixth, without trailing zeros ("0004" for ``...:00.0000000004Z``). Only an event's ``occurred_at`` is made one
    (``consumer.decode``), and only when its text has such digits, so that "the newest ``occurred_at``" orders
    snapshots and cancellations less than a microsecond apart as the contract says, rather than by message id
    (CONTRACT "What each event does"; a newcomer's find).

    It compares with any datetime as the exact instants do (a plain one has no digits past the sixth): equal
    microseconds, then the digits, whose text order is the order of the fractions they spell. Arithmetic and
    conversions give plain datetimes; store the digits apart (``beyond_microseconds``), as the session rows do.
    """

    __slots__ = ("beyond_us",)
    beyond_us: str

    @classmethod
    def of(cls, moment: datetime, beyond_us: str) -> datetime:
        """``moment`` with ``beyond_us`` (digits, none trailing "0"); a plain datetime when there are none."""
        if not beyond_us:
            return moment
        precise = cls(
            moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second, moment.microsecond,
            moment.tzinfo, fold=moment.fold,
        )  # fmt: skip
        precise.beyond_us = beyond_us
        return precise

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, datetime):
            return NotImplemented
        return datetime.__eq__(self, other) is True and beyond_microseconds(self) == beyond_microseconds(other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, datetime):
            return NotImplemented
        if datetime.__eq__(self, other) is not True:
            return datetime.__lt__(self, other)
        return beyond_microseconds(self) < beyond_microseconds(other)

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, datetime):
            return NotImplemented
        if datetime.__eq__(self, other) is not True:
            return datetime.__gt__(self, other)
        return beyond_microseconds(self) > beyond_microseconds(other)

    def __le__(self, other: object) -> bool:
        greater = self.__gt__(other)
        return greater if greater is NotImplemented else not greater

    def __ge__(self, other: object) -> bool:
        less = self.__lt__(other)
        return less if less is NotImplemented else not less

    __hash__ = datetime.__hash__  # equal instants have equal microseconds, so equal hashes


def beyond_microseconds(moment: datetime) -> str:
    """The digits of ``moment``'s fraction past the sixth (``PreciseDatetime.beyond_us``); "" for any other datetime,
    and for one made from a PreciseDatetime by ``replace`` and the like, which keeps the type but not the digits."""
    return getattr(moment, "beyond_us", "")


_FRACTION = re.compile(r"\.([0-9]+)")


def digits_beyond_microseconds(text: str) -> str:
    """The digits of an RFC 3339 timestamp's fraction past the sixth, trailing zeros dropped ("" when none): what a
    parse to ``datetime`` loses. ``text`` is one ``Rfc3339`` accepted; its only "." starts the fraction."""
    found = _FRACTION.search(text)
    return found.group(1)[6:].rstrip("0") if found is not None else ""


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)  # within the years 1 to 9999: checked before


def _refused(schema: CoreSchema, message: str) -> CoreSchema:
    """``schema``, whose every error reads as ``message`` does, as a ValueError raised in a validator would."""
    return core_schema.custom_error_schema(schema, "value_error", custom_error_context={"error": message})


@dataclass(frozen=True, slots=True)
class _FromJson:
    """The same rules as the Python validators before it, run in pydantic-core when the input is JSON text (the
    consumer's path): each Python call from the Rust core cost about 1 µs a field, a sixth of the whole parse.

    Steps: RFC 3339 text (the ``_RFC3339`` pattern, as Rust regex) without a leap second, then pydantic's parse,
    then the instant in UTC within the years 1 to 9999 (their first and last instants excluded), then ``also`` (a
    range, with its message). Both paths accept and refuse the same texts with the same messages
    (``tests/unit/test_timestamps_from_json.py``), but for a date that does not exist in the year 1, 9999 or next
    to a session start bound: pydantic says what is wrong with it, the Python validators' own parse only "is not a
    valid timestamp". Python input (the producer's datetimes, dicts) still goes through those validators; the JSON
    schema is theirs.
    """

    also: tuple[datetime, datetime, str] | None = None  # (earliest, latest, message) in UTC, both inclusive
    # Last, the same instant with the standard library's UTC as its tzinfo. Pydantic gives a parsed offset a tzinfo
    # class of its own, and two datetimes with different tzinfo objects compare through both utcoffset() calls:
    # 400 ns against 25 for each of the consumer's comparisons with the database's timestamps (asyncpg's are in
    # UTC), and asyncpg converts each to UTC again to send it. The step costs 0.3 µs once (issue 15).
    utc: bool = False

    def __get_pydantic_core_schema__(self, source: object, handler: GetCoreSchemaHandler) -> CoreSchema:
        python = handler(source)
        steps = [
            _refused(core_schema.str_schema(pattern=f"^{_RFC3339.pattern}$", strict=True), _NOT_RFC3339),
            _refused(core_schema.str_schema(pattern=_NOT_LEAP_SECOND, strict=True), _LEAP_SECOND),
            core_schema.datetime_schema(tz_constraint="aware", strict=False),
            _refused(core_schema.datetime_schema(gt=_FIRST_UTC, lt=_LAST_UTC), _OUTSIDE_UTC_YEARS),
        ]
        if self.also is not None:
            earliest, latest, message = self.also
            steps.append(_refused(core_schema.datetime_schema(ge=earliest, le=latest), message))
        if self.utc:
            steps.append(core_schema.no_info_plain_validator_function(_utc))
        return core_schema.json_or_python_schema(json_schema=core_schema.chain_schema(steps), python_schema=python)

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        python = schema["python_schema"] if schema["type"] == "json-or-python" else schema
        return handler(python)  # what the Python validators' datetime says: a string of format date-time


# Not strict after the check: the text is known to be RFC 3339, and strict mode refuses text from Python.
Rfc3339 = Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_rfc3339_text), _FromJson()]

# ``Rfc3339``, and from JSON in UTC (``_FromJson.utc``): the consumer's events.
UtcRfc3339 = Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_rfc3339_text), _FromJson(utc=True)]
SessionStart = Annotated[
    AwareDatetime,
    Field(strict=False),
    BeforeValidator(_session_start_text),
    _FromJson((EARLIEST_START, LATEST_START, _OUTSIDE_START_RANGE)),
]

UtcTimestamp = Annotated[datetime, PlainSerializer(rfc3339_utc, return_type=str)]
