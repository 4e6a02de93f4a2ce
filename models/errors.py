"""What can go wrong, sorted by what the runner must do about it."""

from __future__ import annotations

from typing import Literal

DlqReason = Literal[
    "invalid",
    "unsupported_version",
    "key_mismatch",
    "message_id_conflict",
    "too_large",
    "undecodable",
    "processing_error",
]


class BookingSessionsError(Exception):
    """Base of every error this service raises on purpose."""


class Poison(BookingSessionsError):
    """This message will never succeed: dead-letter it with a contract reason, commit, move on."""

    def __init__(self, reason: DlqReason, message: str) -> None:
        super().__init__(message)
        self.reason: DlqReason = reason


class Transient(BookingSessionsError):
    """The world is broken for now (database or broker away): retry with backoff, commit nothing."""


class ConfigurationError(BookingSessionsError):
    """The service cannot start as configured; the message says what to set."""
