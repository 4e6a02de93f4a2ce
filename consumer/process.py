"""One batch of records, one PostgreSQL transaction: inbox, decisions, upserts, outbox, dead letters."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consumer import store
from consumer.deadletter import dead_letters
from consumer.decide import Decision, decide
from consumer.decode import decode, message_id_hint, payload_digest
from consumer.faults import is_transient
from consumer.records import Decoded, Record
from models.errors import DlqReason
from models.events import BookingEvent
from producer.publish import Publisher

log = structlog.get_logger(__name__)


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
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    decode_s: float = 0.0  # parsing and validating the records (pure CPU)
    database_s: float = 0.0  # the transaction, dead letters sent before its commit included

    @property
    def outbox_rows(self) -> int:
        return self.sessions_created + self.sessions_updated


@dataclass(frozen=True, slots=True)
class Repeats:
    """Records whose message id appeared earlier: harmless duplicates or contract-breaking conflicts."""

    duplicates: list[Decoded]
    conflicts: list[Decoded]


class BatchProcessor:
    def __init__(
        self,
        engine: AsyncEngine,
        publisher: Publisher,
        *,
        link_for: Callable[[UUID], str],
        output_topic: str,
        dlq_topic: str,
        max_message_bytes: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        dry_run: bool = False,
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._link_for = link_for
        self._output_topic = output_topic
        self._dlq_topic = dlq_topic
        self._max_message_bytes = max_message_bytes
        self._clock = clock
        self._look_for_repeats = False  # set while batches are mostly repeats (a replay, a redelivery)
        self._dry_run = dry_run  # report what a batch would do (replay --dry-run) without writing or sending

    async def process(self, records: Sequence[Record]) -> BatchResult:
        """Apply the batch in one transaction; if PostgreSQL rejects something in it, isolate the culprit.

        Transient errors propagate (the loop retries the whole batch, nothing was committed). Any other error
        means some record is poison for the database: bisect, commit the halves that apply, and dead-letter
        the single records that still fail as ``processing_error``.
        """
        try:
            return await self._apply(records)
        except Exception as error:
            if is_transient(error) or not records:
                raise
            log.warning("batch_rejected_isolating", records=len(records), error=_first_line(error))
            return await self._bisect(records, error)

    async def _bisect(self, records: Sequence[Record], error: Exception) -> BatchResult:
        if len(records) == 1:
            return await self._dead_letter_poison(records[0], error)
        middle = len(records) // 2
        results = []
        for half in (records[:middle], records[middle:]):  # in order: a booking's events stay in order
            try:
                results.append(await self._apply(half))
            except Exception as half_error:
                if is_transient(half_error):
                    raise  # the halves already committed are duplicates on the retry: harmless
                results.append(await self._bisect(half, half_error))
        return merge(results)

    async def _dead_letter_poison(self, record: Record, error: Exception) -> BatchResult:
        decoded = decode(record, self._max_message_bytes)
        poison = Decoded(
            record,
            decoded.payload_sha256,
            decoded.message_id,
            _printable(decoded.event_type),
            decoded.booking_id,
            "dead_lettered",
            reason="processing_error",
            error=f"PostgreSQL rejected it: {_first_line(error)}",
        )
        now = self._clock()
        started = time.perf_counter()
        async with self._engine.connect() as conn, conn.begin() as transaction:
            new_ids = await store.insert_inbox(conn, [poison] if poison.message_id is not None else [])
            if self._dry_run:
                await transaction.rollback()
            elif poison.message_id is None or poison.message_id in new_ids:
                await self._publisher.send_all(dead_letters([poison], self._dlq_topic, now))
        if not self._dry_run:
            _log_dead_letters([poison])
        result = _result([record], [poison], Repeats([], []), Repeats([], []), [poison], [])
        return replace(result, database_s=time.perf_counter() - started)

    async def _apply(self, records: Sequence[Record]) -> BatchResult:
        started = time.perf_counter()
        digests = [payload_digest(r.value) for r in records]
        now = self._clock()
        async with self._engine.connect() as conn, conn.begin() as transaction:
            seen = await self._seen_before(conn, records, digests) if self._look_for_repeats else set()
            decode_started = time.perf_counter()
            decoded = [decode(r, self._max_message_bytes, digests[i]) for i, r in enumerate(records) if i not in seen]
            decode_s = time.perf_counter() - decode_started
            firsts, in_batch = split_repeats(decoded)
            keyed = [d for d in firsts if d.message_id is not None]
            new_ids = await store.insert_inbox(conn, keyed)
            earlier = [d for d in keyed if d.message_id not in new_ids]
            known = await store.inbox_hashes(conn, (d.message_id for d in earlier if d.message_id is not None))
            across = classify_repeats(earlier, known)
            fresh = [d for d in firsts if d.message_id is None or d.message_id in new_ids]
            by_booking = group_events(d for d in fresh if d.event is not None)
            current = await store.lock_sessions(conn, by_booking)
            decisions = [decide(current.get(b), events, self._link_for, now) for b, events in by_booking.items()]
            await store.write_decisions(conn, decisions, self._output_topic)
            dead = [d for d in fresh if d.outcome == "dead_lettered"]
            conflicts = [_as_conflict(d) for d in in_batch.conflicts + across.conflicts]
            if self._dry_run:
                # Everything was computed against the real rows, under their locks; nothing is kept or sent.
                await transaction.rollback()
            else:
                # DLQ before the inbox rows commit: a crash in between sends a copy twice, never zero times.
                await self._publisher.send_all(dead_letters(dead + conflicts, self._dlq_topic, now))
        if not self._dry_run:
            _log_dead_letters(dead + conflicts)
        result = _result(records, fresh, in_batch, across, dead + conflicts, decisions, seen_before=len(seen))
        # Replays and redeliveries come in runs: look for byte-identical repeats first only while they dominate,
        # so a stream of new events pays nothing for it.
        self._look_for_repeats = result.duplicates * 2 > result.records
        return replace(result, decode_s=decode_s, database_s=time.perf_counter() - started - decode_s)

    async def _seen_before(self, conn: AsyncConnection, records: Sequence[Record], digests: list[str]) -> set[int]:
        """Indexes of records whose exact bytes the inbox has recorded: duplicates, without decoding them."""
        hints = {
            i: hint
            for i, r in enumerate(records)
            if len(r.value or b"") <= self._max_message_bytes and (hint := message_id_hint(r.value)) is not None
        }
        known = await store.known_payloads(conn, [(hint, digests[i]) for i, hint in hints.items()])
        return {i for i, hint in hints.items() if (hint, digests[i]) in known}


def merge(results: Sequence[BatchResult]) -> BatchResult:
    offsets: dict[tuple[str, int], int] = {}
    dead: Counter[DlqReason] = Counter()
    for r in results:
        dead.update(r.dead_lettered)
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
        next_offsets=offsets,
        decode_s=sum(r.decode_s for r in results),
        database_s=sum(r.database_s for r in results),
    )


def _log_dead_letters(dead: Iterable[Decoded]) -> None:
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


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error) or type(error).__name__
    return text.strip().splitlines()[0][:500] if text.strip() else type(error).__name__


def _printable(text: str) -> str:
    """PostgreSQL text cannot hold NUL; the inbox row of a poison record must not fail the same way."""
    return text.replace("\x00", "")


def split_repeats(decoded: Sequence[Decoded]) -> tuple[list[Decoded], Repeats]:
    """Keep the first record of each message id in the batch; later copies are duplicates or conflicts."""
    first_hash: dict[UUID, str] = {}
    firsts: list[Decoded] = []
    repeats = Repeats([], [])
    for d in decoded:
        if d.message_id is None:
            firsts.append(d)
        elif d.message_id not in first_hash:
            first_hash[d.message_id] = d.payload_sha256
            firsts.append(d)
        elif first_hash[d.message_id] == d.payload_sha256:
            repeats.duplicates.append(d)
        else:
            repeats.conflicts.append(d)
    return firsts, repeats


def classify_repeats(earlier: Sequence[Decoded], known_hashes: dict[UUID, str]) -> Repeats:
    repeats = Repeats([], [])
    for d in earlier:
        if d.message_id is not None and known_hashes.get(d.message_id) == d.payload_sha256:
            repeats.duplicates.append(d)
        else:
            repeats.conflicts.append(d)
    return repeats


def group_events(decoded: Iterable[Decoded]) -> dict[str, list[BookingEvent]]:
    """Each booking's events in partition order (the order of the batch)."""
    groups: dict[str, list[BookingEvent]] = {}
    for d in decoded:
        if d.event is not None:
            groups.setdefault(d.event.booking_id, []).append(d.event)
    return groups


def _as_conflict(d: Decoded) -> Decoded:
    error = f"message_id {d.message_id} was already processed with another payload (sha256 differs)"
    return Decoded(
        d.record,
        d.payload_sha256,
        d.message_id,
        d.event_type,
        d.booking_id,
        "dead_lettered",
        None,
        "message_id_conflict",
        error,
    )


def _result(
    records: Sequence[Record],
    fresh: Sequence[Decoded],
    in_batch: Repeats,
    across: Repeats,
    dead: Sequence[Decoded],
    decisions: Sequence[Decision],
    seen_before: int = 0,
) -> BatchResult:
    next_offsets: dict[tuple[str, int], int] = {}
    for r in records:
        tp = (r.topic, r.partition)
        next_offsets[tp] = max(next_offsets.get(tp, 0), r.offset + 1)
    kinds = Counter(o.event.type for d in decisions for o in d.outbox)
    return BatchResult(
        records=len(records),
        applied=sum(1 for d in fresh if d.outcome == "applied"),
        duplicates=seen_before + len(in_batch.duplicates) + len(across.duplicates),
        ignored=sum(1 for d in fresh if d.outcome == "ignored"),
        dead_lettered=Counter(d.reason for d in dead if d.reason is not None),
        sessions_created=kinds["SessionCreated"],
        sessions_updated=kinds["SessionUpdated"],
        next_offsets=next_offsets,
    )
