"""One batch of records: decoded once, applied in transactions on disjoint bookings: inbox, decisions, upserts,
outbox, dead letters."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from uuid import UUID

import structlog
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer import store
from consumer.deadletter import (
    DeadLetterSender,
    as_conflict,
    as_poison,
    dead_letters,
    log_dead_letters,
    send_dead_letters,
)
from consumer.decide import Decision, decide
from consumer.decode import Limits, decode, message_id_hint, payload_digest
from consumer.grouping import Repeats, classify_repeats, group_events, share_out, split_repeats
from consumer.parking import Parking, bookings_of, held_offsets, hold_back, is_lock_wait, without
from consumer.tracing import processing_span
from models.errors import DlqReason
from models.faults import first_line, is_transient, refusal_text
from models.records import Decoded, Record
from models.trace_context import DEFAULT_MAX_LINKS

log = structlog.get_logger(__name__)

# Below this many records per part, another transaction costs more (a connection, a commit) than it saves.
MIN_PART_RECORDS = 200
# Records decoded between two yields to the event loop: about half a millisecond of CPU.
DECODE_SLICE = 100


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

    def followed_by(self, later: Prepared) -> Prepared:
        """One batch of both; ``later`` was fetched after this one (each partition's records stay in order)."""
        return Prepared(
            [*self.records, *later.records],
            self.seen + later.seen,
            self.decoded + later.decoded,
            self.decode_s + later.decode_s,
            self.lookup_s + later.lookup_s,
        )

    def without(self, drop: Callable[[Record], bool]) -> Prepared:
        """The batch less the records ``drop`` picks (those of a partition sought back, fetched too early)."""
        records = [r for r in self.records if not drop(r)]
        decoded = [d for d in self.decoded if not drop(d.record)]
        # Every record is either decoded or a known repeat: what is left of the repeats is the difference.
        return Prepared(records, len(records) - len(decoded), decoded, self.decode_s, self.lookup_s)


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
    # Dead letters the DLQ topic refused for good, by what was sent instead (producer.publish.SentAs).
    dlq_refused: Counter[str] = field(default_factory=Counter)
    # Bookings set aside because another session holds their session row locked (consumer.parking), and per
    # partition the offset of its first parked record: ``next_offsets`` stops there, and consumption resumes there.
    parked: frozenset[str] = frozenset()
    held: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def outbox_rows(self) -> int:
        return self.sessions_created + self.sessions_updated + self.sessions_cancelled


class BatchProcessor:
    def __init__(
        self,
        engine: AsyncEngine,
        publisher: DeadLetterSender,
        *,
        link_for: Callable[[UUID], str],
        output_topic: str,
        dlq_topic: str,
        limits: Limits,
        parallel_transactions: int = 1,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        dry_run: bool = False,
        tracer: trace.Tracer | None = None,
        consumer_group: str | None = None,
        max_links: int = DEFAULT_MAX_LINKS,
        park_locked: bool = False,
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._link_for = link_for
        self._output_topic = output_topic
        self._dlq_topic = dlq_topic
        self._limits = limits
        self._parallel_transactions = parallel_transactions
        self._clock = clock
        self._look_for_repeats = False  # set while batches are mostly repeats (a replay, a redelivery)
        self._dry_run = dry_run  # report what a batch would do (replay --dry-run) without writing or sending
        # One span per transaction (consumer/tracing.py); the global tracer is the API's no-op one until tracing
        # is set up (booking_sessions/observe/tracing.py).
        self._tracer = tracer or trace.get_tracer(__name__)
        self._consumer_group = consumer_group
        self._max_links = max_links
        # Only for a caller that honours ``BatchResult.held`` (the consumer loop); others retry the whole batch.
        self._parking = Parking(engine) if park_locked else None

    async def process(self, records: Sequence[Record]) -> BatchResult:
        """Decode the batch, then apply it (``prepare``, then ``apply``)."""
        return await self.apply(await self.prepare(records))

    async def prepare(self, records: Sequence[Record]) -> Prepared:
        """Decode and sort the batch: CPU only, in slices that let other tasks run between them (the loop
        prepares the next batch while this one's transactions wait for PostgreSQL). Never raises for the
        database: the lookup of known repeats is only a shortcut, and without it everything is decoded."""
        digests = [payload_digest(r.value) for r in records]
        seen: set[int] = set()
        lookup_s = 0.0
        if self._look_for_repeats:
            lookup_started = time.perf_counter()
            try:
                seen = await self._seen_before(records, digests)
            except Exception as error:  # the transaction will meet the same fault and retry it properly
                log.debug("repeat_lookup_failed", error=first_line(error))
            lookup_s = time.perf_counter() - lookup_started
        decoded: list[Decoded] = []
        decode_s = 0.0
        for start in range(0, len(records), DECODE_SLICE):
            slice_started = time.perf_counter()
            decoded += [
                decode(records[i], self._limits, digests[i])
                for i in range(start, min(start + DECODE_SLICE, len(records)))
                if i not in seen
            ]
            decode_s += time.perf_counter() - slice_started
            await asyncio.sleep(0)
        return Prepared(records, len(seen), decoded, decode_s, lookup_s)

    async def apply(self, batch: Prepared) -> BatchResult:
        """Apply a prepared batch: each booking's events in one transaction, in batch order.

        A large batch is shared out by booking into up to ``parallel_transactions`` parts, each applied in its
        own transaction on its own connection, all in flight together: while PostgreSQL works on one part
        (statements, commit), this process prepares another, so the wait for the database no longer adds to
        the time of a batch. The parts touch disjoint rows (see ``share_out``).

        Transient errors propagate, after every part finished: the loop retries the same ``Prepared``, which
        applies only the parts that did not commit (the same parts again: ``share_out`` is deterministic). Any
        other error means some record is poison for the database: its part is bisected, the halves that apply
        are committed, and the single records that still fail are dead-lettered as ``processing_error``.
        """
        started = time.perf_counter()
        now = self._clock()
        firsts, in_batch = split_repeats(batch.decoded)
        parts = share_out(firsts, min(self._parallel_transactions, len(firsts) // MIN_PART_RECORDS))
        todo = [i for i in range(len(parts)) if i not in batch.committed]
        outcomes = await asyncio.gather(*(self._settle(parts[i], now) for i in todo), return_exceptions=True)
        failures: list[BaseException] = []
        for i, outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failures.append(outcome)
            else:
                batch.committed[i] = outcome
        if failures:
            raise _worst(failures)
        results = [batch.committed[i] for i in range(len(parts))]
        merged = merge(results)
        # Every record of a parked booking (its repeats in this batch too) comes again with it: judged then.
        parked = [d for d in batch.decoded if d.booking_id in merged.parked] if merged.parked else []
        held = held_offsets(d.record for d in parked)
        # A copy that contradicts an earlier one in this batch has no inbox row of its own: sent after the
        # commits, it is found and sent again if a crash comes before the offset commit.
        conflicts = [as_conflict(d) for d in in_batch.conflicts if d.booking_id not in merged.parked]
        duplicates = [d for d in in_batch.duplicates if d.booking_id not in merged.parked]
        refused: Counter[str] = Counter()
        if conflicts and not self._dry_run:
            refused = await send_dead_letters(self._publisher, dead_letters(conflicts, self._dlq_topic, now))
            log_dead_letters(conflicts)
        result = replace(
            merged,
            records=len(batch.records) - len(parked),
            duplicates=merged.duplicates + batch.seen + len(duplicates),
            dead_lettered=merged.dead_lettered + Counter(d.reason for d in conflicts if d.reason is not None),
            dlq_refused=merged.dlq_refused + refused,
            next_offsets=hold_back(offsets_after(batch.records), held),
            held=held,
            decode_s=batch.decode_s,
            database_s=batch.lookup_s + time.perf_counter() - started,
        )
        # Replays and redeliveries come in runs: look for byte-identical repeats first only while they dominate,
        # so a stream of new events pays nothing for it.
        self._look_for_repeats = result.duplicates * 2 > result.records
        return result

    async def _settle(self, part: list[Decoded], now: datetime) -> BatchResult:
        parked = self._parking.parked_in(part) if self._parking is not None else set()
        kept = without(part, parked)
        while True:
            try:
                return replace(await self._transact(kept, now), parked=frozenset(parked))
            except Exception as error:
                # Each round parks one booking at least (the lock found), so this ends; a lock on anything but a
                # session row (none found) is retried with the whole batch.
                if (
                    self._parking is not None
                    and is_lock_wait(error)
                    and (found := await self._parking.park(bookings_of(kept)))
                ):
                    parked |= found
                    kept = without(kept, found)
                    continue
                if is_transient(error) or not kept:
                    raise
                log.warning("batch_rejected_isolating", records=len(kept), error=first_line(error))
                return replace(await self._bisect(kept, error, now), parked=frozenset(parked))

    def release(self, booking_ids: Collection[str]) -> None:
        """Parked bookings whose first parked record the loop will deliver again: applied from now on."""
        if self._parking is not None:
            self._parking.release(booking_ids)

    async def locked(self, booking_ids: Collection[str]) -> set[str]:
        """Which of the parked ``booking_ids`` are still locked elsewhere (consumer.parking); all of them when that
        cannot be told now (the database away: asked again later)."""
        if self._parking is None:
            return set()
        try:
            return await self._parking.locked(booking_ids)
        except Exception as error:
            log.info("parked_bookings_check_failed", error=first_line(error))
            return set(booking_ids)

    async def _bisect(self, part: list[Decoded], error: Exception, now: datetime) -> BatchResult:
        if len(part) == 1:
            return await self._dead_letter_poison(part[0], error, now)
        middle = len(part) // 2
        results = []
        for half in (part[:middle], part[middle:]):  # in order: a booking's events stay in order
            try:
                results.append(await self._transact(half, now))
            except Exception as half_error:
                if is_transient(half_error):
                    raise  # the halves already committed are duplicates on the retry: harmless
                results.append(await self._bisect(half, half_error, now))
        return merge(results)

    async def _dead_letter_poison(self, decoded: Decoded, error: Exception, now: datetime) -> BatchResult:
        poison = as_poison(decoded, refusal_text(error))
        refused: Counter[str] = Counter()
        async with self._engine.connect() as conn, conn.begin() as transaction:
            repeats = await store.insert_inbox(conn, [poison] if poison.message_id is not None else [])
            if self._dry_run:
                await transaction.rollback()
            elif poison.message_id not in repeats:
                refused = await send_dead_letters(self._publisher, dead_letters([poison], self._dlq_topic, now))
        if not self._dry_run:
            log_dead_letters([poison])
        return replace(_result([poison], Repeats([], []), [poison], []), dlq_refused=refused)

    async def _transact(self, part: Sequence[Decoded], now: datetime) -> BatchResult:
        """One part in one transaction, in its processing span; its dead letters are sent before the commit."""
        if not part:
            return _result([], Repeats([], []), [], [])
        refused: Counter[str] = Counter()
        with processing_span(self._tracer, part, self._consumer_group, self._max_links) as causes:
            async with self._engine.connect() as conn, conn.begin() as transaction:
                keyed = [d for d in part if d.message_id is not None]
                repeats = await store.insert_inbox(conn, keyed)
                earlier = [d for d in keyed if d.message_id in repeats] if repeats else []
                known = await store.inbox_hashes(conn, (d.message_id for d in earlier if d.message_id is not None))
                across = classify_repeats(earlier, known)
                fresh = [d for d in part if d.message_id not in repeats] if repeats else part
                by_booking = group_events(fresh)
                current = await store.lock_sessions(conn, by_booking)
                decisions = [decide(current.get(b), events, self._link_for, now) for b, events in by_booking.items()]
                await store.write_decisions(conn, decisions, self._output_topic, causes)
                dead = [d for d in fresh if d.outcome == "dead_lettered"] + [as_conflict(d) for d in across.conflicts]
                if self._dry_run:
                    # Everything was computed against the real rows, under their locks; nothing is kept or sent.
                    await transaction.rollback()
                else:
                    # DLQ before the inbox rows commit: a crash in between sends a copy twice, never zero times.
                    refused = await send_dead_letters(self._publisher, dead_letters(dead, self._dlq_topic, now))
        if not self._dry_run:
            log_dead_letters(dead)
        return replace(_result(fresh, across, dead, decisions), dlq_refused=refused)

    async def _seen_before(self, records: Sequence[Record], digests: list[str]) -> set[int]:
        """Indexes of records whose exact bytes the inbox has recorded: duplicates, without decoding them."""
        hints = {
            i: hint
            for i, r in enumerate(records)
            if len(r.value or b"") <= self._limits.value_bytes and (hint := message_id_hint(r.value)) is not None
        }
        async with self._engine.connect() as conn:
            known = await store.known_payloads(conn, [(hint, digests[i]) for i, hint in hints.items()])
        return {i for i, hint in hints.items() if (hint, digests[i]) in known}


def merge(results: Sequence[BatchResult]) -> BatchResult:
    offsets: dict[tuple[str, int], int] = {}
    parked: set[str] = set()
    dead: Counter[DlqReason] = Counter()
    refused: Counter[str] = Counter()
    for r in results:
        dead.update(r.dead_lettered)
        refused.update(r.dlq_refused)
        parked |= r.parked
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
    )


def offsets_after(records: Iterable[Record]) -> dict[tuple[str, int], int]:
    """The offsets to commit once ``records`` are applied: past the last one of each partition, in batch order.
    That is the highest, except in a batch topped up after a rebalance reset the partition's position to its
    committed offset: then it is lower, and the records after it come again as duplicates. Never higher than a
    record that was not applied."""
    return {(r.topic, r.partition): r.offset + 1 for r in records}


def _worst(failures: Sequence[BaseException]) -> BaseException:
    """The error to raise for a batch whose parts failed: one that is not transient (a bug, say) wins, so that
    it is not retried for ever; the others are logged, not lost."""
    failures = sorted(failures, key=is_transient)
    for other in failures[1:]:
        log.warning("batch_part_failed", cause=type(other).__name__, error=first_line(other))
    return failures[0]


def _result(
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
