"""Pure: bytes of one record -> Decoded. Every contract rule about a single message lives here."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, TypeVar, get_args
from uuid import UUID

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, from_json

from models.errors import DlqReason
from models.events import SCHEMA_VERSION, BookingEvent, BookingSnapshot, BookingType, Envelope, LooseEnvelope
from models.fields import (
    NO_CONTROL_PATTERN,
    EventTypeName,
    PreciseDatetime,
    control_character,
    digits_beyond_microseconds,
    is_booking_id,
)
from models.records import DLQ_REPLAYED_AT, DLQ_REPLAYED_FROM, Decoded, Record

_ERROR_LIMIT = 1024  # dlq-error is at most 1 KiB
_REPLAY_MARKERS = [DLQ_REPLAYED_AT, DLQ_REPLAYED_FROM]  # last of a record `dlq replay` sent (ops/dlq_replay.py)


class Limits(NamedTuple):
    """Bounds on one input record (settings ``BOOKING_MAX_*``); a record over a size bound is ``too_large`` and
    is never parsed, so it costs no more than its bytes."""

    value_bytes: int = 64 * 1024  # CONTRACT "Input": at most 64 KiB, configurable
    key_bytes: int = 1024  # a booking id is at most 64 characters; room for a mismatching key to be reported
    header_count: int = 64
    header_bytes: int = 16 * 1024  # names (UTF-8) and values together
    clock_skew_s: float = 3600.0  # occurred_at may be this much later than the record's own timestamp


# The model's validator itself: ``BookingEvent.model_validate_json`` adds a Python call per record around it.
_validate_event = BookingEvent.__pydantic_validator__.validate_json
_MESSAGE_ID = re.compile(rb'"message_id"\s*:\s*"([0-9A-Fa-f-]{32,36})"')


def payload_digest(value: bytes | None) -> str:
    """The inbox's payload_sha256: hex SHA-256 (64 characters) of the value bytes exactly as they arrived, of no
    bytes for a null value (CONTRACT "What each event does": a message id with another SHA-256 is a conflict)."""
    return hashlib.sha256(value or b"").hexdigest()


def message_id_hint(value: bytes | None) -> UUID | None:
    """The first ``message_id`` the raw bytes spell, without parsing them.

    Only a hint, for finding byte-identical repeats cheaply: a record counts as seen only when the inbox holds
    this id together with this very SHA-256, which only decoding these same bytes can have put there.
    """
    found = _MESSAGE_ID.search(value) if value else None
    if found is None:
        return None
    try:
        return UUID(found.group(1).decode("ascii"))
    except ValueError:
        return None


def read_as_is(record: Record, limits: Limits) -> bool:
    """Whether ``decode`` reads the record's value at all: the client read the whole record, it has a value, and it
    keeps every size bound. Only such a record may be taken for a repeat by its bytes alone (``consumer.batch``'s
    shortcut after a run of repeats): any other is dead-lettered by ``decode`` before its message id counts, and
    must be whatever batches came before it (CONTRACT "Dead letters": undecodable, too_large)."""
    return record.unreadable is None and record.value is not None and _oversize(record, limits) is None


def decode(record: Record, limits: Limits | int, digest: str | None = None, received_ms: int | None = None) -> Decoded:
    """One record -> what it should become (CONTRACT "Input" and "Dead letters"); never raises for any input.

    ``limits``: the bounds, or just the value's byte limit (the others at their defaults). ``digest``: the value's
    payload_digest, when the caller computed it already. Whatever is ``applied`` or ``ignored`` can be stored by
    PostgreSQL: every string that reaches a row is checked here, so the database never has to refuse one.
    """
    if isinstance(limits, int):
        limits = Limits(value_bytes=limits)
    value = record.value if record.value is not None else b""
    digest = digest or payload_digest(value)
    if record.unreadable is not None:
        return _dead(record, digest, "undecodable", record.unreadable)
    # The common record (no headers, small) pays for two comparisons, not a call.
    big = len(value) > limits.value_bytes or len(record.key or b"") > limits.key_bytes or record.headers
    oversize = _oversize(record, limits) if big else None
    if oversize is not None:
        # Not parsed at all: a huge record must not cost memory or CPU beyond its bytes.
        return _dead(record, digest, "too_large", oversize)
    if record.value is None:
        return _dead(record, digest, "invalid", "value is empty (tombstone)")
    # Only a hint (the words may sit inside a string), confirmed by a parse; ``in`` is ten times faster than a regex.
    if (b"NaN" in value or b"Infinity" in value) and not _strict_json(value):
        return _loosely(record, digest, "value: not strict JSON (NaN, Infinity or -Infinity)", value)
    event = _parsed(record, digest, value)
    if isinstance(event, Decoded):
        return event
    message_id, event_type, booking_id = event.message_id, event.type, event.booking_id
    if event.schema_version > SCHEMA_VERSION:
        return _newer(record, digest, event.schema_version, message_id, event_type, booking_id)
    # The two checks below run inline for every record; their helpers only word a refusal.
    timestamp_ms, skew_s = record.timestamp_ms, limits.clock_skew_s
    own = timestamp_ms is not None and timestamp_ms >= 0
    if not own:
        # No timestamp of its own (-1: a producer may write that, and the broker keeps it): bounded by when it was
        # received instead, else one event from a broken clock would pin its session's details for good.
        timestamp_ms = received_ms
    if timestamp_ms is not None and event.occurred_at.timestamp() * 1000 > timestamp_ms + skew_s * 1000:
        error = _after_record_time(event.occurred_at, timestamp_ms, skew_s, own)
        return _dead(record, digest, "invalid", error, message_id, event_type, booking_id)
    # booking_id is ASCII (its pattern): a key is its UTF-8 text exactly when the bytes are equal.
    key = record.key
    if key is not None and key != booking_id.encode():
        return _dead(record, digest, "key_mismatch", _key_mismatch(key, booking_id), message_id, event_type, booking_id)
    return Decoded(record, digest, message_id, event_type, booking_id, "applied", event)


def _parsed(record: Record, digest: str, value: bytes) -> BookingEvent | Decoded:
    """The event ``value`` holds, validated (read leniently when the strict parser refused it, ``_leniently``), with
    its exact ``occurred_at``; or the dead letter that says why it is not one."""
    validated = value
    try:
        event: BookingEvent = _validate_event(value)
    except ValidationError as full_error:
        lenient = _leniently(value) if _parser_refused(full_error) else None
        if lenient is None:
            return _classify_invalid(record, digest, full_error)
        validated = lenient.value
        try:
            event = _validate_event(validated)
        except ValidationError as reread_error:
            return _classify_invalid(record, digest, reread_error, validated, lenient.unstorable)
    if _SEVEN_FRACTION_DIGITS.search(validated) is not None or b"\\u" in validated:
        return _with_exact_occurred_at(event, validated)
    return event


# A decimal fraction of more than six digits anywhere in the value: maybe an occurred_at finer than the microsecond
# that the parse kept (``_with_exact_occurred_at``). A search in C over the bytes, about 0.2 µs a record; the JSON is
# read a second time only for the rare value it finds something in, or that holds a \u escape, which may spell the
# digits or the point (``"...00\u002e1234567Z"``: a newcomer's find).
_SEVEN_FRACTION_DIGITS = re.compile(rb"\.[0-9]{7}")


def _with_exact_occurred_at(event: BookingEvent, validated: bytes) -> BookingEvent:
    """``event`` with its ``occurred_at`` as exact as its text (``models.fields.PreciseDatetime``) when that text
    has digits past the microsecond, so that "the newest occurred_at" orders two events less than a microsecond
    apart by their instants, not by their message ids (CONTRACT "What each event does"). ``validated``: the JSON
    the event was validated from (its last ``occurred_at`` is the one validated, as here)."""
    text = from_json(validated).get("occurred_at")
    digits = digits_beyond_microseconds(text) if isinstance(text, str) else ""
    if not digits:
        return event
    return event.model_copy(update={"occurred_at": PreciseDatetime.of(event.occurred_at, digits)})


# The event's own fields, by level: what a re-read keeps of a value (``_leniently``); anything else is ignored.
_EVENT_FIELDS = frozenset(BookingEvent.model_fields)
_SNAPSHOT_FIELDS = frozenset(BookingSnapshot.model_fields)
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Reread(NamedTuple):
    """A value the strict parser refused, re-read: its event's own fields as JSON that parser reads (``value``),
    and those whose text held a lone surrogate (replaced there by a value their type refuses), each with why:
    ``(where, message)``."""

    value: bytes
    unstorable: list[tuple[str, str]]


def _parser_refused(error: ValidationError) -> bool:
    """The value never reached validation: pydantic-core's JSON parser refused it."""
    return any(item["type"] == "json_invalid" for item in error.errors(include_url=False))


def _leniently(value: bytes) -> _Reread | None:
    """A value that RFC 8259 allows but pydantic-core's parser refuses, re-read with the standard library's: a lone
    surrogate escape (``"\\ud800"``), or nesting past the parser's 200 levels. CONTRACT "Input": unknown extra
    fields are accepted and ignored, so only the event's own fields are kept, re-written as JSON the parser reads,
    and validated as any value; each own field whose text holds a lone surrogate (no UTF-8, so no row, can hold
    it) is replaced by a value that fails its type, and named in ``unstorable``: the record is ``invalid``, under
    its message id when that is readable, so that a copy of it is a duplicate.

    None when the standard library refuses the value too (not UTF-8, a byte order mark, ``NaN``, an integer of over
    4,300 digits, nesting deeper than the interpreter's recursion limit allows, nearly 1,000 levels): the parser's
    own error stands. Never raises."""
    try:
        parsed = json.loads(value.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if not isinstance(parsed, dict):
        return None
    unstorable: list[tuple[str, str]] = []
    fields = _own_fields(parsed, _EVENT_FIELDS, "", unstorable)
    if isinstance(booking := parsed.get("booking"), dict):
        fields["booking"] = _own_fields(booking, _SNAPSHOT_FIELDS, "booking.", unstorable)
    return _Reread(json.dumps(fields).encode(), unstorable)


def _own_fields(
    parsed: dict[str, object], names: frozenset[str], prefix: str, unstorable: list[tuple[str, str]]
) -> dict[str, object]:
    """The entries of ``parsed`` named in ``names``; text with a lone surrogate, a nested value, a number JSON cannot
    write (1e400 read as infinity) become ``[]``: wrong for every field of the event, as the original was."""
    fields: dict[str, object] = {}
    for name in names & parsed.keys():
        field = parsed[name]
        if isinstance(field, str) and (found := _SURROGATE.search(field)) is not None:
            message = f"contains a lone surrogate (U+{ord(found.group()):04X} at character {found.start()})"
            unstorable.append((prefix + name, message))
            field = []
        elif isinstance(field, dict | list) or (isinstance(field, float) and not math.isfinite(field)):
            field = []
        fields[name] = field
    return fields


def _no_constant(name: str) -> object:
    raise ValueError(f"not strict JSON: {name}")


def _oversize(record: Record, limits: Limits) -> str | None:
    """Which size bound the record breaks, if any (CONTRACT "Input"; issue 16: keys and headers too)."""
    value_bytes = len(record.value or b"")
    if value_bytes > limits.value_bytes:
        return f"value is {value_bytes} bytes, limit is {limits.value_bytes}"
    key_bytes = len(record.key or b"")
    if key_bytes > limits.key_bytes:
        return f"key is {key_bytes} bytes, limit is {limits.key_bytes}"
    headers = record.headers
    if not headers:
        return None  # most records: no header at all
    if [name for name, _ in headers[-2:]] == _REPLAY_MARKERS:
        # The two markers `dlq replay` appends are the service's own: a record at the limits, dead-lettered for
        # another reason and replayed, must not come back too_large for them.
        headers = headers[:-2]
    if len(headers) > limits.header_count:
        return f"{len(headers)} headers, limit is {limits.header_count}"
    header_bytes = sum(len(name.encode("utf-8", "surrogateescape")) + len(v or b"") for name, v in headers)
    if header_bytes > limits.header_bytes:
        return f"headers are {header_bytes} bytes, limit is {limits.header_bytes}"
    return None


def _strict_json(value: bytes) -> bool:
    """False when the value parses only as the JSON superset that allows NaN and Infinity (CONTRACT: strict)."""
    try:
        from_json(value, allow_inf_nan=False)
    except ValueError:
        try:
            from_json(value, allow_inf_nan=True)
        except ValueError:
            return True  # not JSON at all: validation says so, with its own message
        return False
    return True


def _after_record_time(occurred_at: datetime, timestamp_ms: int, skew_s: float, own: bool = True) -> str:
    """Why ``occurred_at`` is refused: later than the record's own timestamp (ms since the epoch) plus the skew
    (seconds), or, for a record without one (``own`` False), than when it was received. CONTRACT "Input": so that
    one event from a broken clock cannot pin a session's details for good."""
    late_s = occurred_at.timestamp() - timestamp_ms / 1000
    reference = "the record's timestamp" if own else "the time it was received (the record has no timestamp)"
    return f"occurred_at: is {late_s:.0f} s after {reference}; at most {skew_s:g} s allowed"


def _classify_invalid(
    record: Record,
    digest: str,
    full_error: ValidationError,
    value: bytes | None = None,
    unstorable: Sequence[tuple[str, str]] = (),
) -> Decoded:
    """Full validation of ``value`` (default: the record's value) failed: a newer schema or an unknown type is not
    an error of the message. An unknown type stays ``ignored`` only when its inbox row can be stored (its type
    text passes as stored text). ``unstorable``: fields whose lone surrogate a re-read replaced (``_leniently``),
    named first in the error."""
    value = record.value or b"" if value is None else value
    try:
        envelope = Envelope.model_validate_json(value)
    except ValidationError as envelope_error:
        return _loosely(record, digest, _describe(envelope_error, full_error, first=unstorable), value)
    # Kept for the inbox only when it is a well-formed booking id; anything else is untrusted text.
    booking_id = envelope.booking_id if is_booking_id(envelope.booking_id) else None
    if envelope.schema_version > SCHEMA_VERSION:
        return _newer(record, digest, envelope.schema_version, envelope.message_id, envelope.type, booking_id)
    if envelope.type not in get_args(BookingType) and envelope.schema_version >= 1:
        # Forward compatibility: a type we do not know yet is recorded, not dead-lettered.
        return Decoded(record, digest, envelope.message_id, envelope.type, booking_id, "ignored")
    error = _describe(full_error, first=unstorable)
    return _dead(record, digest, "invalid", error, envelope.message_id, envelope.type, booking_id)


_T = TypeVar("_T")
_UUID: TypeAdapter[UUID] = TypeAdapter(UUID)
_TYPE_NAME: TypeAdapter[str] = TypeAdapter(EventTypeName)


def _loosely(record: Record, digest: str, error: str, value: bytes) -> Decoded:
    """A JSON object (``value``: the record's, or its re-read) whose envelope is broken too, by what it still says of
    itself, field by field: a
    ``schema_version`` newer than this build's is ``unsupported_version`` whatever else changed (a newer schema may
    change the envelope itself); else it is ``invalid``. A readable ``message_id`` goes with it into the inbox
    (CONTRACT: every dead-lettered message id is recorded), so a copy of it is a duplicate and a changed copy a
    ``message_id_conflict``, as for any other dead letter. Not an object at all: ``invalid``, without an id."""
    loose = _envelope(value)
    if loose is None:
        return _dead(record, digest, "invalid", error)
    message_id = _readable(_UUID, loose.message_id)
    event_type = _readable(_TYPE_NAME, loose.type) or "unknown"
    booking_id = loose.booking_id if is_booking_id(loose.booking_id) else None
    version = loose.schema_version
    if type(version) is int and version > SCHEMA_VERSION:
        return _newer(record, digest, version, message_id, event_type, booking_id)
    return _dead(record, digest, "invalid", error, message_id, event_type, booking_id)


def recorded_message_id(value: bytes | None) -> UUID | None:
    """The message id ``decode`` records a dead letter of ``value`` under, when it reads one: the top-level
    ``message_id`` of a JSON object, read as the envelope is (``LooseEnvelope``), else as leniently as a value no
    strict parser reads (``_unparsed_envelope``). For the DLQ tools, which must find a dead letter's inbox row as
    ``decode`` wrote it (a value over a size bound, which ``decode`` never reads, is for the caller to leave out).
    Never raises."""
    loose = _envelope(value) if value else None
    return None if loose is None else _readable(_UUID, loose.message_id)


def _envelope(value: bytes) -> LooseEnvelope | None:
    """The top-level fields a JSON object says of itself, each of any shape (``LooseEnvelope``), read strictly, else
    as leniently as ``_unparsed_envelope``; None when the value is no JSON object even so."""
    try:
        return LooseEnvelope.model_validate_json(value)
    except ValidationError:
        return _unparsed_envelope(value)


def _unparsed_envelope(value: bytes) -> LooseEnvelope | None:
    """What a value that no strict parser reads (bytes that are not UTF-8, a byte order mark, a raw control
    character inside a string, ``NaN``) still says of itself at its top level, read as leniently as the standard
    library goes: the mark dropped, bytes that are not UTF-8 kept as lone surrogates (so no field holding them reads
    as an id, a type or a booking id), control characters allowed in strings, ``NaN`` and the infinities read as
    nothing. The record stays ``invalid`` with the parser's own error; only its message id now reaches the inbox,
    as for any other dead letter whose id is readable, so a copy is a duplicate and a corrected copy a
    ``message_id_conflict`` (CONTRACT "What each event does"). None when even that reads no JSON object."""
    text = value.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    try:
        parsed = json.loads(text, strict=False, parse_constant=lambda _: None)
    except (ValueError, RecursionError):
        return None
    return LooseEnvelope.model_validate(parsed) if isinstance(parsed, dict) else None


def _newer(
    record: Record, digest: str, version: int, message_id: UUID | None, event_type: str, booking_id: str | None
) -> Decoded:
    """A record of a schema_version newer than this build's: ``unsupported_version`` (CONTRACT "Input")."""
    error = f"schema_version {version} is newer than {SCHEMA_VERSION}"
    return _dead(record, digest, "unsupported_version", error, message_id, event_type, booking_id)


def _readable(adapter: TypeAdapter[_T], value: object) -> _T | None:
    """``value`` as ``adapter`` reads a JSON string (a message id, a type name), or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _key_mismatch(key: bytes, booking_id: str) -> str:
    """Why a key that differs from ``booking_id`` is refused (CONTRACT "Dead letters": key_mismatch); an absent
    key is no contradiction, as booking_id is authoritative."""
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return f"key is not UTF-8; booking_id is {booking_id!r}"
    return f"key {text[:80]!r} differs from booking_id {booking_id!r}"


def _describe(*errors: ValidationError, first: Sequence[tuple[str, str]] = ()) -> str:
    """One readable line per problem (``first``'s ``(where, message)``, then each error's; the first word wins for
    a field named twice), without echoing the (possibly huge or private) input."""
    parts = [f"{where}: {message}" for where, message in first]
    named = {where for where, _ in first}
    for error in errors:
        here = set()
        for item in error.errors(include_url=False):
            where = ".".join(str(p) for p in item["loc"]) or "value"
            if where not in named:
                parts.append(f"{where}: {_message(item)}")
                here.add(where)
        named |= here
    return truncate("; ".join(parts))


def _message(item: ErrorDetails) -> str:
    """The validator's message; for a stored string with a control character, which one and where (the pattern
    alone would not say), still without echoing the input."""
    if item["type"] == "string_pattern_mismatch" and item.get("ctx", {}).get("pattern") == NO_CONTROL_PATTERN:
        found = control_character(item["input"]) if isinstance(item["input"], str) else None
        if found is not None:
            return f"Value error, {found}"
    return item["msg"]


def printable(text: str) -> str:
    """Control characters (and lone surrogates) as escapes: a validator's message may quote a character of the
    input, and dlq-error reaches logs and operators' terminals as text."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def truncate(text: str, limit: int = _ERROR_LIMIT) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8 (default 1 KiB, CONTRACT "Dead letters": dlq-error), with
    "..." when cut, never splitting a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", errors="ignore") + "..."


def _dead(
    record: Record,
    digest: str,
    reason: DlqReason,
    error: str,
    message_id: UUID | None = None,
    event_type: str = "unknown",
    booking_id: str | None = None,
) -> Decoded:
    return Decoded(
        record,
        digest,
        message_id,
        event_type,
        booking_id,
        "dead_lettered",
        reason=reason,
        error=truncate(printable(error)),
    )
