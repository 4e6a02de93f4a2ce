"""What the consumer works on: a Kafka record as plain data, and what decoding made of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple
from uuid import UUID

from models.errors import DlqReason
from models.events import BookingEvent

Outcome = Literal["applied", "ignored", "dead_lettered"]
# A header value may be null on the wire (Kafka's NULLABLE_BYTES), and a dead letter keeps it null (CONTRACT).
Headers = tuple[tuple[str, bytes | None], ...]

# The headers a dead letter carries besides the original ones (CONTRACT "Dead letters"), named once: written by
# consumer.deadletter (and producer.publish for a refused copy), read by booking_sessions.ops.dlq, documented by
# booking_sessions.dev.asyncapi.
DLQ_HEADER_PREFIX = "dlq-"
DLQ_REASON = "dlq-reason"  # a models.errors.DlqReason
DLQ_ERROR = "dlq-error"  # a readable message, at most 1 KiB
DLQ_SOURCE_TOPIC = "dlq-source-topic"
DLQ_SOURCE_PARTITION = "dlq-source-partition"  # decimal
DLQ_SOURCE_OFFSET = "dlq-source-offset"  # decimal
DLQ_FAILED_AT = "dlq-failed-at"  # RFC 3339, UTC
# Added to a copy the DLQ topic refused for good: without its value, then bare (producer.publish).
DLQ_VALUE_OMITTED = "dlq-value-omitted"  # the original value's size in bytes
DLQ_VALUE_SHA256 = "dlq-value-sha256"  # its SHA-256, hex
DLQ_KEY_OMITTED = "dlq-key-omitted"  # bare copy: the key's size in bytes
DLQ_HEADERS_OMITTED = "dlq-headers-omitted"  # bare copy: how many headers were left out
# Added by `dlq replay` to the copy it sends back to the input topic (README, "Dead letters").
DLQ_REPLAYED_AT = "dlq-replayed-at"  # RFC 3339, UTC
DLQ_REPLAYED_FROM = "dlq-replayed-from"  # <dlq topic>/<partition>/<offset>
# The six every dead letter carries, in the order they are added.
DLQ_HEADERS = (DLQ_REASON, DLQ_ERROR, DLQ_SOURCE_TOPIC, DLQ_SOURCE_PARTITION, DLQ_SOURCE_OFFSET, DLQ_FAILED_AT)


# NamedTuples, not frozen dataclasses: two of these are built per record, and a frozen dataclass's __init__
# (one object.__setattr__ per field) costs about 1 µs, five times a NamedTuple's; just as immutable.


class Record(NamedTuple):
    """One input record, detached from aiokafka so the core can be tested without a broker."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    # The record's own Kafka timestamp (ms since the epoch; producer or broker time, as the topic is configured).
    # None or negative: unknown (old message formats), and ``occurred_at`` is not bounded by it.
    timestamp_ms: int | None = None
    # Set when the Kafka client could not read the whole record (consumer.wire): what failed, for dlq-error. The
    # fields above then hold what could be read.
    unreadable: str | None = None


class Decoded(NamedTuple):
    """A record after decoding: its idempotency key and what it should become."""

    record: Record
    payload_sha256: str
    message_id: UUID | None  # None: unreadable, so it cannot be recorded in the inbox
    event_type: str
    booking_id: str | None
    outcome: Outcome
    event: BookingEvent | None = None  # set exactly when outcome == "applied"
    reason: DlqReason | None = None  # set exactly when outcome == "dead_lettered"
    error: str | None = None


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One record to produce: a session event from the outbox, or a dead letter (bytes as sent, headers in order)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


SentAs = Literal["value_omitted", "bare", "lost"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A dead letter the DLQ topic refused for good, and what was sent in its place (CONTRACT "Dead letters")."""

    record: OutgoingRecord  # as first sent
    error: str  # the refusal, class and message
    sent_as: SentAs  # value_omitted: without its value; bare: nothing of the original; lost: not even that
