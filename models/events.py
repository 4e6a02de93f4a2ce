"""The wire contract (CONTRACT.md): booking events in, session events out. Pydantic at the edge only."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, StringConstraints

# The newest input schema this build understands; a higher one goes to the DLQ as unsupported_version.
SCHEMA_VERSION = 1

BookingType = Literal["BookingApproved", "BookingConfirmed", "BookingCancelled"]
SessionEventType = Literal["SessionCreated", "SessionUpdated", "SessionCancelled"]
SessionStatus = Literal["SCHEDULED", "CANCELLED"]

BookingId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
UserId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


def rfc3339_utc(moment: datetime) -> str:
    """UTC with a ``Z``; milliseconds only when there are any, as the contract's examples show."""
    utc = moment.astimezone(UTC)
    spec = "milliseconds" if utc.microsecond >= 1000 else "seconds"  # no ".000" for a few microseconds
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339_text(value: object) -> object:
    """Pydantic also reads "1764000000" as Unix time; the contract wants RFC 3339 text with an offset."""
    if isinstance(value, datetime):
        return value  # built in Python (the producer), not parsed from text
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise ValueError("must be an RFC 3339 timestamp with an offset, e.g. 2026-11-24T10:15:00Z")
    return value


# Not strict after the check: the text is known to be RFC 3339, and strict mode refuses text from Python.
Rfc3339 = Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_rfc3339_text)]

UtcTimestamp = Annotated[datetime, PlainSerializer(rfc3339_utc, return_type=str)]


class BookingSnapshot(BaseModel):
    """The booking as the booking service saw it when the event occurred."""

    # strict: "60" is not a duration and 1735689600 is not an RFC 3339 timestamp.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    student_id: UserId
    instructor_id: UserId
    scheduled_start: Rfc3339
    duration_minutes: Annotated[int, Field(ge=1, le=720)]
    title: Annotated[str, StringConstraints(max_length=200)] | None = None


class BookingEvent(BaseModel):
    """``BookingApproved``, ``BookingConfirmed`` or ``BookingCancelled``, validated against every rule of the
    contract. Every type carries the booking snapshot; ``cancellation_reason`` means something only on a
    ``BookingCancelled``."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    message_id: Annotated[UUID, Field(strict=False)]  # JSON has no UUID type: a string is the only form
    type: BookingType
    schema_version: Annotated[int, Field(ge=1)]
    occurred_at: Rfc3339
    booking_id: BookingId
    booking: BookingSnapshot
    auto_approved: bool = False
    cancellation_reason: Annotated[str, StringConstraints(max_length=200)] | None = None


class Envelope(BaseModel):
    """The fields that classify a record that failed full validation (unknown type, newer schema)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    message_id: UUID
    type: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    schema_version: Annotated[int, Field(strict=True)]
    booking_id: object = None  # any shape: only a valid booking id is kept, never a reason to reject


class SessionView(BaseModel):
    """The session as the video service needs it; ``cancellation_reason`` only on a cancelled session, and
    only when the cancellation gave one (left out of the JSON otherwise)."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    status: SessionStatus
    meeting_link: str
    scheduled_start: UtcTimestamp
    duration_minutes: int
    instructor_id: str
    student_id: str
    title: str | None
    cancellation_reason: str | None = Field(default=None, exclude_if=lambda reason: reason is None)


class SessionEvent(BaseModel):
    """``SessionCreated`` / ``SessionUpdated`` / ``SessionCancelled`` on the output topic."""

    model_config = ConfigDict(frozen=True)

    message_id: UUID
    type: SessionEventType
    schema_version: Literal[1] = 1
    occurred_at: UtcTimestamp
    booking_id: str
    session: SessionView
