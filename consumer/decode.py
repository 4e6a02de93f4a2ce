"""Pure: bytes of one record -> Decoded. Every contract rule about a single message lives here."""

from __future__ import annotations

import hashlib
import re
from typing import TypeGuard, get_args
from uuid import UUID

from pydantic import ValidationError

from consumer.records import Decoded, Record
from models.errors import DlqReason
from models.events import SCHEMA_VERSION, BookingEvent, BookingType, Envelope

_ERROR_LIMIT = 1024  # dlq-error is at most 1 KiB


_MESSAGE_ID = re.compile(rb'"message_id"\s*:\s*"([0-9A-Fa-f-]{32,36})"')


def payload_digest(value: bytes | None) -> str:
    """The inbox's payload_sha256: hex SHA-256 of the value bytes exactly as they arrived."""
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


def decode(record: Record, max_bytes: int, digest: str | None = None) -> Decoded:
    """``digest``: the value's payload_digest, when the caller computed it already."""
    value = record.value if record.value is not None else b""
    digest = digest or payload_digest(value)
    if len(value) > max_bytes:
        # Not parsed at all: a huge record must not cost memory or CPU beyond its bytes.
        return _dead(record, digest, "too_large", f"value is {len(value)} bytes, limit is {max_bytes}")
    if record.value is None:
        return _dead(record, digest, "invalid", "value is empty (tombstone)")
    try:
        event = BookingEvent.model_validate_json(value)
    except ValidationError as full_error:
        return _classify_invalid(record, digest, full_error)
    if event.schema_version > SCHEMA_VERSION:
        return _dead(
            record,
            digest,
            "unsupported_version",
            f"schema_version {event.schema_version} is newer than {SCHEMA_VERSION}",
            event.message_id,
            event.type,
            event.booking_id,
        )
    key_error = _key_mismatch(record.key, event.booking_id)
    if key_error is not None:
        return _dead(record, digest, "key_mismatch", key_error, event.message_id, event.type, event.booking_id)
    return Decoded(record, digest, event.message_id, event.type, event.booking_id, "applied", event=event)


def _classify_invalid(record: Record, digest: str, full_error: ValidationError) -> Decoded:
    """Full validation failed: a newer schema or an unknown type is not an error of the message."""
    try:
        envelope = Envelope.model_validate_json(record.value or b"")
    except ValidationError:
        return _dead(record, digest, "invalid", _describe(full_error))
    # Kept for the inbox only when it is a well-formed booking id; anything else is untrusted text.
    booking_id = envelope.booking_id if _is_booking_id(envelope.booking_id) else None
    if envelope.schema_version > SCHEMA_VERSION:
        reason: DlqReason = "unsupported_version"
        error = f"schema_version {envelope.schema_version} is newer than {SCHEMA_VERSION}"
        return _dead(record, digest, reason, error, envelope.message_id, envelope.type, booking_id)
    if envelope.type not in get_args(BookingType) and envelope.schema_version >= 1:
        # Forward compatibility: a type we do not know yet is recorded, not dead-lettered.
        return Decoded(record, digest, envelope.message_id, envelope.type, booking_id, "ignored")
    return _dead(record, digest, "invalid", _describe(full_error), envelope.message_id, envelope.type, booking_id)


_BOOKING_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _is_booking_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _BOOKING_ID.fullmatch(value) is not None


def _key_mismatch(key: bytes | None, booking_id: str) -> str | None:
    if key is None:
        return None  # booking_id is authoritative; an absent key is no contradiction
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return f"key is not UTF-8; booking_id is {booking_id!r}"
    if text != booking_id:
        return f"key {text[:80]!r} differs from booking_id {booking_id!r}"
    return None


def _describe(error: ValidationError) -> str:
    """One readable line per problem, without echoing the (possibly huge or private) input."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in item["loc"]) or "value"
        parts.append(f"{where}: {item['msg']}")
    return truncate("; ".join(parts))


def truncate(text: str, limit: int = _ERROR_LIMIT) -> str:
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
        error=truncate(error),
    )
