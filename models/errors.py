"""What can go wrong, sorted by what the runner must do about it.

Who raises and who catches (issue 11: each class is raised where the decision is made, caught where it is acted on):

- ``Poison``: raised by consumer.isolation (``alone``) when a single record fails for a reason that is not
  transient; caught by ``consumer.isolation.isolate``, which hands it to the batch processor to be dead-lettered with
  its ``reason`` and message, committed, and moved past (CONTRACT "Dead letters"). What decoding refuses (invalid,
  too large, a key mismatch...) is not raised: ``consumer.decode`` returns it as a value on each ``Decoded`` (with
  its ``DlqReason``), because it is found record by record on the hot path and never interrupts a batch.
- ``Transient``: raised by a decision that the world, not the record, got in the way (``consumer.store``'s
  ``StaleDecision``: a row changed under the batch); recognised by ``models.faults.is_transient`` beside the driver's
  and the broker's own errors, and acted on by ``models.backoff.backoff``: the batch is retried, nothing committed.
- ``ConfigurationError``: raised where a setting is found unusable (the meeting key, TLS files, tracing, servers);
  caught by the command (booking_sessions.cli), which prints its one line and exits 2.
- ``BookingSessionsError`` is also the base of the operators' ``OperatorError`` and ``ArgumentError``
  (booking_sessions.ops), which the operator's terminal shows as one line.
"""

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
    """This message will never succeed: dead-letter it with a contract reason, commit, move on.

    ``reason`` becomes its ``dlq-reason``, the message its ``dlq-error`` (readable, without the input)."""

    def __init__(self, reason: DlqReason, message: str) -> None:
        super().__init__(message)
        self.reason: DlqReason = reason


class Transient(BookingSessionsError):
    """The world is broken for now (database or broker away): retry with backoff, commit nothing."""


class ConfigurationError(BookingSessionsError):
    """The service cannot start as configured; the message says what to set."""
