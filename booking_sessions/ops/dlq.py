"""The dead-letter topic as operators see it: each record with its dlq-* headers read, filtered, and listed.

Read without a consumer group, from the beginning offsets to the end offsets taken at start: listing commits
nothing and disturbs nobody. ``booking_sessions.ops.dlq_replay`` sends selected dead letters back to the input topic.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, get_args
from uuid import UUID

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from rich.progress import Progress

from booking_sessions.kafka_options import kafka_client_options
from booking_sessions.ops.failures import OperatorError, close_within, topic_partitions
from booking_sessions.ops.untrusted import MAX_JSON_BYTES
from booking_sessions.settings import Settings
from consumer import wire
from consumer.decode import recorded_message_id
from models.errors import DlqReason
from models.records import (
    DLQ_ERROR,
    DLQ_FAILED_AT,
    DLQ_HEADER_PREFIX,
    DLQ_REASON,
    DLQ_REPLAYED_AT,
    DLQ_REPLAYED_FROM,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
    Headers,
)

DLQ_REASONS: tuple[DlqReason, ...] = get_args(DlqReason)
_REPLAY_MARKERS = frozenset({DLQ_REPLAYED_AT, DLQ_REPLAYED_FROM})
STALL_TIMEOUT_S = 30.0  # a partition that stops short of the end offset it reported: say so instead of hanging


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One DLQ record: the original key, value and headers, plus the dlq-* headers the consumer added."""

    partition: int
    offset: int
    timestamp: datetime  # when the DLQ record was written (broker or producer time)
    key: bytes | None
    value: bytes | None
    headers: Headers

    def header(self, name: str) -> str | None:
        """The last header called ``name`` as text (invalid UTF-8 replaced), None if absent or null."""
        found = [v for k, v in self.headers if k == name]
        value = found[-1] if found else None
        return None if value is None else value.decode("utf-8", errors="replace")

    @property
    def position(self) -> str:
        """``partition:offset`` in the DLQ topic: what `dlq replay --offset` takes."""
        return f"{self.partition}:{self.offset}"

    @property
    def reason(self) -> str:
        """``dlq-reason`` (a ``models.errors.DlqReason``; "?" if missing: not written by this service)."""
        return self.header(DLQ_REASON) or "?"

    @property
    def error(self) -> str:
        """``dlq-error``, the readable cause (empty if missing)."""
        return self.header(DLQ_ERROR) or ""

    @property
    def source(self) -> str:
        """``topic/partition/offset`` of the original record (CONTRACT "Dead letters"), "?" for a missing part."""
        parts = (self.header(DLQ_SOURCE_TOPIC), self.header(DLQ_SOURCE_PARTITION), self.header(DLQ_SOURCE_OFFSET))
        return "/".join(p or "?" for p in parts)

    @property
    def failed_at(self) -> datetime:
        """``dlq-failed-at`` as an aware UTC datetime, or the DLQ record's own timestamp if it is missing or
        unreadable."""
        text = self.header(DLQ_FAILED_AT)
        if text is not None:
            try:
                return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
            except ValueError:
                pass  # not ours: fall back to the record's own time
        return self.timestamp

    @property
    def payload_sha256(self) -> str:
        """SHA-256 of the value as stored (hex; of b"" for a null value)."""
        return hashlib.sha256(self.value or b"").hexdigest()

    @property
    def message_id(self) -> UUID | None:
        """Read from the value as the consumer read it for the dead letter's inbox row (``consumer.decode.
        recorded_message_id``: also from a value no strict parser reads, such as one with a byte order mark, so that
        `dlq replay` finds and resets that row); None when the value holds none, or is over MAX_JSON_BYTES."""
        if self.value is None or len(self.value) > MAX_JSON_BYTES:
            return None
        return recorded_message_id(self.value)

    @property
    def key_text(self) -> str:
        """The key as text (invalid UTF-8 replaced; "" for a null key): for display only, replay sends the bytes."""
        return "" if self.key is None else self.key.decode("utf-8", errors="replace")

    def original_headers(self) -> Headers:
        """The headers the record had before it was dead-lettered: those before the block this service appended,
        which begins with its last ``dlq-reason``, less the ``dlq-replayed-*`` markers of an earlier ``dlq replay``
        just before it. A dlq-* header the record carried itself is its own and stays (CONTRACT "Dead letters":
        headers unchanged). A record without ``dlq-reason`` was not written by this service: every dlq-* removed."""
        names = [k for k, _ in self.headers]
        if DLQ_REASON not in names:
            return tuple((k, v) for k, v in self.headers if not k.startswith(DLQ_HEADER_PREFIX))
        kept = list(self.headers[: len(names) - 1 - names[::-1].index(DLQ_REASON)])
        while kept and kept[-1][0] in _REPLAY_MARKERS:
            kept.pop()
        return tuple(kept)

    def as_dict(self) -> dict[str, Any]:
        """The row of `dlq list --json`: position, reason, error, source, key, message_id, failed_at (ISO 8601)
        and replayed_from, all JSON values (data as text, never interpreted)."""
        message_id = self.message_id
        return {
            "partition": self.partition,
            "offset": self.offset,
            "reason": self.reason,
            "error": self.error,
            "source": self.source,
            "key": self.key_text,
            "message_id": None if message_id is None else str(message_id),
            "failed_at": self.failed_at.isoformat(),
            "replayed_from": self.header(DLQ_REPLAYED_FROM),
        }


@dataclass(frozen=True, slots=True)
class DlqFilter:
    """Which dead letters an operator means; an empty filter selects every one."""

    reasons: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    positions: frozenset[tuple[int, int]] = frozenset()

    @property
    def empty(self) -> bool:
        """True when no filter was given (then `dlq replay` needs ``--all``)."""
        return not (self.reasons or self.positions) and self.since is None and self.until is None

    def matches(self, letter: DeadLetter) -> bool:
        """Whether ``letter`` passes every filter given (reasons, positions, and ``since <= failed_at < until``)."""
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.positions and (letter.partition, letter.offset) not in self.positions:
            return False
        if self.since is not None and letter.failed_at < self.since:
            return False
        return self.until is None or letter.failed_at < self.until


@dataclass(frozen=True, slots=True)
class Scan:
    """What a scan of the DLQ found: the matching letters (the newest ``limit`` if limited), how many records were
    read and how many matched."""

    letters: list[DeadLetter]  # the matches; with a limit, the newest (by dlq-failed-at), oldest of them first
    scanned: int
    matched: int
    by_reason: Mapping[str, int] = field(default_factory=dict)  # every match, shown or not, per dlq-reason


def from_record(record: ConsumerRecord[bytes, bytes]) -> DeadLetter:
    """The DLQ record as a ``DeadLetter``: key, value and headers exactly as stored."""
    return DeadLetter(
        record.partition,
        record.offset,
        record_time(record.timestamp),
        record.key,
        record.value,
        # Exactly as stored: a null value stays None, and is replayed as null. A header name the client could not
        # read is left out (consumer.wire), as the consumer leaves it out of a dead letter.
        wire.split_unreadable(tuple(record.headers or ()))[0],
    )


def record_time(timestamp_ms: int) -> datetime:
    """A record's Kafka timestamp as a time; one no datetime can hold (a producer may write any 64-bit number)
    reads as the earliest time, so that listing the DLQ never fails on it."""
    try:
        return datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        return datetime.min.replace(tzinfo=UTC)


async def scan(
    bootstrap: str,
    topic: str,
    wanted: Callable[[DeadLetter], bool],
    progress: Progress,
    *,
    limit: int | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> Scan:
    """Read the DLQ from its beginning to the end offsets taken now; keep the matches, in the order read (each
    partition's in offset order), or with ``limit`` the ``limit`` newest by ``dlq-failed-at`` (then position),
    oldest of them first."""
    options = dict(client_options or {})
    partitions = await topic_partitions(bootstrap, topic, "BOOKING_DLQ_TOPIC", **options)
    tps = [TopicPartition(topic, p) for p in partitions]
    wire.install()  # a DLQ record the client cannot read is listed with what could be read, not a crash
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, client_id="booking-sessions-dlq", enable_auto_commit=False, **options
    )
    await consumer.start()
    kept: list[DeadLetter] = []
    newest: list[tuple[tuple[datetime, int, int], DeadLetter]] = []  # with a limit: a heap, the oldest kept first
    scanned = matched = 0
    reasons: dict[str, int] = {}
    try:
        beginning = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        todo = {tp: end[tp] for tp in tps if end[tp] > beginning[tp]}
        task = progress.add_task("reading the DLQ", total=sum(end[tp] - beginning[tp] for tp in todo))
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, beginning[tp])
        reached = {tp: beginning[tp] for tp in todo}
        last_move = time.monotonic()
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=500, max_records=5000)
            for tp, messages in batch.items():
                for message in messages:
                    if message.offset >= todo.get(tp, 0):
                        continue  # written after this scan began
                    scanned += 1
                    letter = from_record(message)
                    if wanted(letter):
                        matched += 1
                        reasons[letter.reason] = reasons.get(letter.reason, 0) + 1
                        if limit is None:
                            kept.append(letter)
                        elif len(newest) < limit:
                            heapq.heappush(newest, (_age(letter), letter))
                        else:
                            heapq.heappushpop(newest, (_age(letter), letter))
            last_move = await _advance(consumer, todo, reached, last_move)
            progress.update(task, completed=sum(reached[tp] - beginning[tp] for tp in reached))
    finally:
        await close_within(consumer.stop(), "consumer")
    if limit is not None:
        kept = [letter for _, letter in sorted(newest, key=lambda entry: entry[0])]
    return Scan(kept, scanned, matched, dict(sorted(reasons.items())))


def _age(letter: DeadLetter) -> tuple[datetime, int, int]:
    """Which of two dead letters is newer: by ``dlq-failed-at``, then by position in the DLQ (a unique key)."""
    return (letter.failed_at, letter.partition, letter.offset)


async def _advance(
    consumer: AIOKafkaConsumer, todo: dict[TopicPartition, int], reached: dict[TopicPartition, int], last_move: float
) -> float:
    """Note how far each partition got; drop the finished ones; fail if none moved for too long."""
    moved = False
    for tp in list(todo):
        position = min(await consumer.position(tp), todo[tp])
        moved = moved or position > reached[tp]
        reached[tp] = position
        if position >= todo[tp]:
            del todo[tp]
    if moved:
        return time.monotonic()
    if todo and time.monotonic() - last_move > STALL_TIMEOUT_S:
        stuck = ", ".join(f"{tp.partition} at {reached[tp]} of {end}" for tp, end in todo.items())
        raise OperatorError(f"the DLQ stopped short of its end offsets (partition {stuck})")
    return last_move


async def list_dead_letters(settings: Settings, wanted: DlqFilter, *, limit: int, progress: Progress) -> Scan:
    """Read the DLQ topic up to its end offsets taken at the start and keep what ``wanted`` matches (the newest
    ``limit``; 0: all). Raises OperatorError without a broker, for a missing topic, or when a partition stalls
    short of its end (STALL_TIMEOUT_S)."""
    if settings.kafka_bootstrap is None:
        raise OperatorError("BOOKING_KAFKA_BOOTSTRAP is not set: dlq list reads the DLQ topic")
    found = await scan(
        settings.kafka_bootstrap,
        settings.dlq_topic,
        wanted.matches,
        progress,
        limit=limit or None,
        client_options=kafka_client_options(settings),
    )
    # The same order in every run and either output, whatever order the partitions were fetched in.
    return replace(found, letters=sorted(found.letters, key=_age)) if not limit else found
