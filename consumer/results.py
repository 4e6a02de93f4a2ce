"""What a batch is and what it did: ``Prepared`` (decoded, ready for its transactions) and ``BatchResult`` (the counts
and the offsets to commit), with the pure functions that combine them. consumer.batch makes them; the consume loop,
replay, the metrics and the tests read them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

from consumer.decide import Decision
from consumer.grouping import Repeats
from consumer.parking import HoldObserver
from models.errors import DlqReason
from models.records import Decoded, Record


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch decoded, ready for its transactions; a retry applies the same one."""

    records: Sequence[Record]
    seen: int  # byte-identical repeats the inbox already holds, not decoded
    decoded: list[Decoded]  # every other record, in batch order
    decode_s: float
    lookup_s: float  # looking for known repeats in the inbox
    # Parts (by index) whose transaction committed, with what it did: a retry after a transient fault in
    # another part applies only the rest, and the batch's counts stay those of the first time.
    committed: dict[int, BatchResult] = field(default_factory=dict)
    # Records that waited on the broker behind this batch's fetch (the consumer lag the fetch responses showed,
    # consumer.catch_up); None when the consume loop did not read it (catch-up batches off, or not the loop).
    waiting: int | None = None

    def followed_by(self, later: Prepared) -> Prepared:
        """One batch of both; ``later`` was fetched after this one (each partition's records stay in order)."""
        return Prepared(
            [*self.records, *later.records],
            self.seen + later.seen,
            self.decoded + later.decoded,
            self.decode_s + later.decode_s,
            self.lookup_s + later.lookup_s,
            waiting=later.waiting if later.waiting is not None else self.waiting,
        )

    def without(self, drop: Callable[[Record], bool]) -> Prepared:
        """The batch less the records ``drop`` picks (those of a partition sought back, fetched too early)."""
        records = [r for r in self.records if not drop(r)]
        decoded = [d for d in self.decoded if not drop(d.record)]
        # Every record is either decoded or a known repeat: what is left of the repeats is the difference.
        return Prepared(
            records, len(records) - len(decoded), decoded, self.decode_s, self.lookup_s, waiting=self.waiting
        )


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one committed batch did; the loop commits ``next_offsets`` and logs the counts."""

    records: int
    applied: int
    duplicates: int
    ignored: int
    dead_lettered: Counter[DlqReason]
    sessions_created: int
    sessions_updated: int
    sessions_cancelled: int = 0  # SessionCancelled written: announced sessions that were cancelled
    cancelled_unannounced: int = 0  # sessions written CANCELLED at their first write: never announced
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    decode_s: float = 0.0  # parsing and validating the records (pure CPU)
    database_s: float = 0.0  # the transaction, dead letters sent before its commit included
    # From the start of the batch's apply to its offsets committed (the consume loop sets it once they are).
    total_s: float = 0.0
    # Records that waited behind the batch's fetch (``Prepared.waiting``); None: not read.
    waiting: int | None = None
    # Dead letters the DLQ topic refused for good, by what was sent instead (producer.publish.SentAs).
    dlq_refused: Counter[str] = field(default_factory=Counter)
    # Bookings set aside because another transaction holds their rows (consumer.parking), and per
    # partition the offset of its first parked record: ``next_offsets`` stops there, and consumption resumes there.
    parked: frozenset[str] = frozenset()
    held: dict[tuple[str, int], int] = field(default_factory=dict)
    # Message ids of the batch the inbox held already, with the payload SHA-256 recorded for each: the batch's later
    # copies of them are judged against that, not against the batch's first copy (BatchProcessor.apply).
    recorded: dict[UUID, str] = field(default_factory=dict)

    @property
    def outbox_rows(self) -> int:
        """Outbox rows the batch wrote: one per SessionCreated, SessionUpdated and SessionCancelled."""
        return self.sessions_created + self.sessions_updated + self.sessions_cancelled


def merge(results: Sequence[BatchResult]) -> BatchResult:
    """What several transactions (or batches) did together: counts added, per partition the highest next offset,
    parked bookings united (``held`` is left to the caller). ``merge([])`` is the empty result."""
    offsets: dict[tuple[str, int], int] = {}
    parked: set[str] = set()
    dead: Counter[DlqReason] = Counter()
    refused: Counter[str] = Counter()
    recorded: dict[UUID, str] = {}
    for r in results:
        dead.update(r.dead_lettered)
        refused.update(r.dlq_refused)
        parked |= r.parked
        recorded |= r.recorded
        for tp, offset in r.next_offsets.items():
            offsets[tp] = max(offsets.get(tp, 0), offset)
    return BatchResult(
        records=sum(r.records for r in results),
        applied=sum(r.applied for r in results),
        duplicates=sum(r.duplicates for r in results),
        ignored=sum(r.ignored for r in results),
        dead_lettered=dead,
        sessions_created=sum(r.sessions_created for r in results),
        sessions_updated=sum(r.sessions_updated for r in results),
        sessions_cancelled=sum(r.sessions_cancelled for r in results),
        cancelled_unannounced=sum(r.cancelled_unannounced for r in results),
        next_offsets=offsets,
        decode_s=sum(r.decode_s for r in results),
        database_s=sum(r.database_s for r in results),
        dlq_refused=refused,
        parked=frozenset(parked),
        recorded=recorded,
    )


def offsets_after(records: Iterable[Record]) -> dict[tuple[str, int], int]:
    """The offsets to commit once ``records`` are applied: past the last one of each partition, in batch order.
    That is the highest, except in a batch topped up after a rebalance reset the partition's position to its
    committed offset: then it is lower, and the records after it come again as duplicates. Never higher than a
    record that was not applied."""
    return {(r.topic, r.partition): r.offset + 1 for r in records}


def counted(
    fresh: Sequence[Decoded], across: Repeats, dead: Sequence[Decoded], decisions: Sequence[Decision]
) -> BatchResult:
    """What one transaction did with its part: ``fresh`` records new to the inbox, ``across`` the repeats."""
    kinds = Counter(o.kind for d in decisions for o in d.outbox)
    return BatchResult(
        records=len(fresh) + len(across.duplicates) + len(across.conflicts),
        applied=sum(1 for d in fresh if d.outcome == "applied"),
        duplicates=len(across.duplicates),
        ignored=sum(1 for d in fresh if d.outcome == "ignored"),
        dead_lettered=Counter(d.reason for d in dead if d.reason is not None),
        sessions_created=kinds["SessionCreated"],
        sessions_updated=kinds["SessionUpdated"],
        sessions_cancelled=kinds["SessionCancelled"],
        cancelled_unannounced=sum(1 for d in decisions if d.first_write and d.cancelled),
    )


def committed_fields(result: BatchResult, commit_s: float) -> dict[str, object]:
    """The fields of the ``batch_committed`` log line: the batch's counts, the offsets it committed, its times in
    milliseconds (decoding, its transactions, the offset commit of ``commit_s`` seconds, ``total_s`` in all), and
    ``records_waiting`` behind its fetch when that was read (the consumer lag that sizes catch-up batches)."""
    fields: dict[str, object] = {
        "records": result.records,
        "applied": result.applied,
        "duplicates": result.duplicates,
        "ignored": result.ignored,
        "dead_lettered": sum(result.dead_lettered.values()),
        "sessions_created": result.sessions_created,
        "sessions_updated": result.sessions_updated,
        "sessions_cancelled": result.sessions_cancelled + result.cancelled_unannounced,
        "offsets": {f"{t}/{p}": o for (t, p), o in sorted(result.next_offsets.items())},
        "decode_ms": round(result.decode_s * 1000, 1),
        "database_ms": round(result.database_s * 1000, 1),
        "commit_ms": round(commit_s * 1000, 1),
        "total_ms": round(result.total_s * 1000, 1),
    }
    if result.waiting is not None:
        fields["records_waiting"] = result.waiting
    return fields


class LoopObserver(HoldObserver, Protocol):
    """What the loop reports for metrics (booking_sessions.observe.metrics.Metrics implements it)."""

    def batch_committed(self, result: BatchResult, *, commit_s: float) -> None:
        """A batch's offsets were committed ``commit_s`` seconds after the commit began, ``result.total_s`` after
        the batch was taken in hand."""

    def batch_retried(self, error: BaseException) -> None:
        """The batch met a transient fault and will be retried."""
