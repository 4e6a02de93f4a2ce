"""Dead letters: the original key, value and headers, unchanged, plus the contract's dlq-* headers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

import structlog

from consumer.decode import truncate
from models.errors import Poison
from models.fields import rfc3339_utc
from models.records import (
    DLQ_ERROR,
    DLQ_FAILED_AT,
    DLQ_REASON,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
    Decoded,
    OutgoingRecord,
    Refusal,
)

log = structlog.get_logger(__name__)


class DeadLetterSender(Protocol):
    """What the consumer needs of a producer to dead-letter (``producer.publish.Publisher`` is one; the service wires
    it in, so ``consumer`` never imports ``producer``)."""

    async def send_dead_letters(self, records: Sequence[OutgoingRecord]) -> list[Refusal]:
        """Send every record, each in the fullest form the DLQ topic takes; return those it refused for good.
        Raises what is transient (the broker away or slow), for the batch to be retried."""
        ...


def dead_letter(decoded: Decoded, dlq_topic: str, failed_at: datetime) -> OutgoingRecord:
    """The dead letter of a dead-lettered record (CONTRACT "Dead letters"): its key, value and headers unchanged,
    plus the six dlq-* headers (models.records.DLQ_HEADERS; dlq-error at most 1 KiB). Raises ValueError for a record
    that has no dlq reason (a bug)."""
    record = decoded.record
    if decoded.reason is None:
        raise ValueError(f"record at {record.topic}/{record.partition}/{record.offset} has no dlq reason")
    added = (
        (DLQ_REASON, decoded.reason.encode()),
        (DLQ_ERROR, truncate(decoded.error or decoded.reason).encode()),
        (DLQ_SOURCE_TOPIC, record.topic.encode()),
        (DLQ_SOURCE_PARTITION, str(record.partition).encode()),
        (DLQ_SOURCE_OFFSET, str(record.offset).encode()),
        (DLQ_FAILED_AT, rfc3339_utc(failed_at).encode()),
    )
    return OutgoingRecord(dlq_topic, record.key, record.value, record.headers + added)


def dead_letters(items: Sequence[Decoded], dlq_topic: str, failed_at: datetime) -> list[OutgoingRecord]:
    """``dead_letter`` of each, in order."""
    return [dead_letter(d, dlq_topic, failed_at) for d in items]


def as_conflict(d: Decoded) -> Decoded:
    """A record whose message id was already applied with other bytes: a broken producer, not a repeat."""
    error = f"message_id {d.message_id} was already processed with another payload (sha256 differs)"
    return d._replace(outcome="dead_lettered", event=None, reason="message_id_conflict", error=error)


def as_poison(d: Decoded, poison: Poison) -> Decoded:
    """A record that failed on its own although it passed validation (which keeps its inbox row storable): dead
    with the ``Poison``'s reason and message (consumer.isolation)."""
    return d._replace(outcome="dead_lettered", event=None, reason=poison.reason, error=str(poison))


def log_dead_letters(dead: Iterable[Decoded]) -> None:
    """One line per dead letter (rare by nature), after its transaction committed: every field to find it."""
    for d in dead:
        log.warning(
            "record_dead_lettered",
            reason=d.reason,
            topic=d.record.topic,
            partition=d.record.partition,
            offset=d.record.offset,
            message_id=None if d.message_id is None else str(d.message_id),
            booking_id=d.booking_id,
            error=d.error,
        )


async def send_dead_letters(publisher: DeadLetterSender, records: Sequence[OutgoingRecord]) -> Counter[str]:
    """Send dead letters, whatever the DLQ topic refuses for good (CONTRACT "Dead letters"): such a one goes
    without its value (``dlq-value-omitted``, ``dlq-value-sha256``), or bare, and is logged here with its source
    coordinates. Returns how many were sent in which form (``models.records.SentAs``), for the metrics. A passing
    refusal raises, for the batch to be retried."""
    refusals = await publisher.send_dead_letters(records)
    for refusal in refusals:
        headers = dict(refusal.record.headers)
        source = [
            (headers.get(name) or b"?").decode() for name in (DLQ_SOURCE_TOPIC, DLQ_SOURCE_PARTITION, DLQ_SOURCE_OFFSET)
        ]
        log.error(
            "dead_letter_refused_by_dlq",
            sent_as=refusal.sent_as,
            refusal=refusal.error,
            value_bytes=len(refusal.record.value or b""),
            reason=(headers.get(DLQ_REASON) or b"?").decode(),
            topic=source[0],
            partition=source[1],
            offset=source[2],
        )
    return Counter(refusal.sent_as for refusal in refusals)
