"""Dead letters: the original key, value and headers, unchanged, plus the contract's dlq-* headers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from consumer.decode import truncate
from consumer.records import Decoded
from models.events import rfc3339_utc
from producer.publish import OutgoingRecord


def dead_letter(decoded: Decoded, dlq_topic: str, failed_at: datetime) -> OutgoingRecord:
    record = decoded.record
    if decoded.reason is None:
        raise ValueError(f"record at {record.topic}/{record.partition}/{record.offset} has no dlq reason")
    added = (
        ("dlq-reason", decoded.reason.encode()),
        ("dlq-error", truncate(decoded.error or decoded.reason).encode()),
        ("dlq-source-topic", record.topic.encode()),
        ("dlq-source-partition", str(record.partition).encode()),
        ("dlq-source-offset", str(record.offset).encode()),
        ("dlq-failed-at", rfc3339_utc(failed_at).encode()),
    )
    return OutgoingRecord(dlq_topic, record.key, record.value, record.headers + added)


def dead_letters(items: Sequence[Decoded], dlq_topic: str, failed_at: datetime) -> list[OutgoingRecord]:
    return [dead_letter(d, dlq_topic, failed_at) for d in items]
