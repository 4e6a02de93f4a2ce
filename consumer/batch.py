"""One batch of records: decoded once, applied in transactions on disjoint bookings: inbox, decisions, upserts,
outbox, dead letters."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
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
from consumer.decide import decide
from consumer.decode import Limits, decode, message_id_hint, payload_digest, read_as_is
from consumer.grouping import (
    Repeats,
    classify_repeats,
    group_events,
    judged_against_inbox,
    share_out,
    split_repeats,
)
from consumer.isolation import isolate
from consumer.parking import Parking, held_offsets, hold_back, is_lock_wait, without
from consumer.results import BatchResult, Prepared, counted, merge, offsets_after
from consumer.tracing import processing_span
from models.errors import Poison
from models.faults import first_line, is_transient
from models.records import Decoded, Record
from models.trace_context import DEFAULT_MAX_LINKS

log = structlog.get_logger(__name__)

# Below this many records per part, another transaction costs more (a connection, a commit) than it saves.
MIN_PART_RECORDS = 200
# Records decoded between two yields to the event loop: about half a millisecond of CPU.
DECODE_SLICE = 100


def transactions_for(records: int, parallel_transactions: int) -> int:
    """How many transactions ``BatchProcessor.apply`` shares a batch of ``records`` first copies out to: at most
    ``parallel_transactions``, at least MIN_PART_RECORDS records each, and one at least."""
    return max(1, min(parallel_transactions, records // MIN_PART_RECORDS))


class BatchProcessor:
    """The one way batches are applied (``run`` and ``replay``): ``prepare`` decodes a batch of records, ``apply``
    applies it in transactions and returns what it did, with the offsets to commit (CONTRACT "What each event does":
    the inbox row and the effects in one transaction; dead letters sent before it commits).

    Takes the engine, the dead-letter sender (a producer.publish.Publisher, wired in by the service), the meeting
    link of a session id, the output and DLQ topics, the input limits, how many transactions a large batch may
    spread over, a clock, ``dry_run`` (roll every transaction back, send nothing), the tracer, the consumer group
    named in spans, the span link limit, and ``park_locked`` (only for a caller that honours ``BatchResult.held``:
    the consume loop of ``run``).
    """

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
        """Decode and sort the batch, ready for ``apply``: ``records`` in, a ``Prepared`` out. Never raises.

        Two steps: while recent batches were mostly repeats (a replay, a redelivery), one short query asks the inbox
        which records' exact bytes it holds already (``_known_repeats``: those are counted, not decoded); then the
        rest is decoded, CPU only, in slices that let other tasks run between them (the loop prepares the next
        batch while this one's transactions wait for PostgreSQL)."""
        digests = [payload_digest(r.value) for r in records]
        lookup_started = time.perf_counter()
        seen = await self._known_repeats(records, digests) if self._look_for_repeats else set()
        lookup_s = time.perf_counter() - lookup_started if self._look_for_repeats else 0.0
        decoded, decode_s = await self._decode(records, digests, seen)
        return Prepared(records, len(seen), decoded, decode_s, lookup_s)

    async def _known_repeats(self, records: Sequence[Record], digests: list[str]) -> set[int]:
        """Indexes of records whose exact bytes the inbox has recorded. Only a shortcut: when the database cannot
        answer, none (everything is decoded, and the transaction meets the same fault and retries it properly)."""
        try:
            return await self._seen_before(records, digests)
        except Exception as error:
            log.debug("repeat_lookup_failed", error=first_line(error))
            return set()

    async def _decode(
        self, records: Sequence[Record], digests: list[str], seen: set[int]
    ) -> tuple[list[Decoded], float]:
        """Every record not in ``seen``, decoded in batch order (CPU only), and the seconds it took."""
        decoded: list[Decoded] = []
        decode_s = 0.0
        for start in range(0, len(records), DECODE_SLICE):
            slice_started = time.perf_counter()
            received_ms = int(self._clock().timestamp() * 1000)  # for records without a timestamp of their own
            decoded += [
                decode(records[i], self._limits, digests[i], received_ms)
                for i in range(start, min(start + DECODE_SLICE, len(records)))
                if i not in seen
            ]
            decode_s += time.perf_counter() - slice_started
            await asyncio.sleep(0)
        return decoded, decode_s

    async def apply(self, batch: Prepared, sent: Callable[[], None] | None = None) -> BatchResult:
        """Apply a prepared batch: each booking's events in one transaction, in batch order.

        A large batch is shared out by booking into up to ``parallel_transactions`` parts, each applied in its
        own transaction on its own connection, all in flight together: while PostgreSQL works on one part
        (statements, commit), this process prepares another, so the wait for the database no longer adds to
        the time of a batch. The parts touch disjoint rows (see ``share_out``).

        Transient errors propagate, after every part finished: the loop retries the same ``Prepared``, which
        applies only the parts that did not commit (the same parts again: ``share_out`` is deterministic). Any
        other error means some record is poison for the database: its part is bisected, the halves that apply
        are committed, and the single records that still fail are dead-lettered as ``processing_error``.

        ``sent`` is called once: when every part has begun, before its first wait for the database (a connection,
        or its first statement, which carries the BEGIN), or when the parts end, whichever comes first (the
        consume loop starts fetching the next batch then, not before: the CPU that costs would hold these
        statements back).
        """
        started = time.perf_counter()
        now = self._clock()
        firsts, in_batch = split_repeats(batch.decoded)
        parts = share_out(firsts, transactions_for(len(firsts), self._parallel_transactions))
        todo = [i for i in range(len(parts)) if i not in batch.committed]
        countdown = _Countdown(len(todo), sent)
        try:
            outcomes = await asyncio.gather(
                *(self._settle(parts[i], now, countdown.done) for i in todo), return_exceptions=True
            )
        finally:
            countdown.finish()
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
        if merged.recorded and (in_batch.duplicates or in_batch.conflicts):
            in_batch = judged_against_inbox(in_batch, merged.recorded)
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

    async def _settle(self, part: list[Decoded], now: datetime, sent: Callable[[], None] | None = None) -> BatchResult:
        parked = self._parking.parked_in(part) if self._parking is not None else set()
        kept = without(part, parked)
        if sent is not None:
            # Nothing else runs before this part first waits, for its connection or its first statement (BEGIN
            # goes with it): called here, once, however many times the part is tried.
            sent()
        while True:
            try:
                return replace(await self._transact(kept, now), parked=frozenset(parked))
            except Exception as error:
                # Each round parks one booking at least (the rows found held), so this ends; a lock on anything
                # else (none found: a table lock, say) is retried with the whole batch.
                if self._parking is not None and is_lock_wait(error) and (found := await self._parking.park(kept)):
                    parked |= found
                    kept = without(kept, found)
                    continue
                if is_transient(error) or not kept:
                    raise
                log.warning("batch_rejected_isolating", records=len(kept), error=first_line(error))
                pieces = await isolate(
                    kept,
                    error,
                    lambda piece: self._transact(piece, now),
                    lambda record, poison: self._dead_letter(record, poison, now),
                )
                return replace(merge(pieces), parked=frozenset(parked))

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

    async def _dead_letter(self, decoded: Decoded, poison: Poison, now: datetime) -> BatchResult:
        """Where ``Poison`` is acted on: the record's inbox row (outcome ``dead_lettered``) and its dead letter, in
        one transaction (DLQ before the commit); a repeat already in the inbox is not sent again."""
        dead = as_poison(decoded, poison)
        refused: Counter[str] = Counter()
        async with self._engine.connect() as conn, conn.begin() as transaction:
            repeats = await store.insert_inbox(conn, [dead] if dead.message_id is not None else [])
            if self._dry_run:
                await transaction.rollback()
            elif dead.message_id not in repeats:
                refused = await send_dead_letters(self._publisher, dead_letters([dead], self._dlq_topic, now))
        if not self._dry_run:
            log_dead_letters([dead])
        return replace(counted([dead], Repeats([], []), [dead], []), dlq_refused=refused)

    async def _transact(self, part: Sequence[Decoded], now: datetime) -> BatchResult:
        """One part in one transaction, in its processing span; its dead letters are sent before the commit."""
        if not part:
            return counted([], Repeats([], []), [], [])
        refused: Counter[str] = Counter()
        with processing_span(self._tracer, part, self._consumer_group, self._max_links) as causes:
            async with self._engine.connect() as conn, conn.begin() as transaction:
                keyed = [d for d in part if d.message_id is not None]
                # One round trip: the inbox rows, and the session rows of the bookings with a new event, locked.
                repeats, current = await store.insert_inbox_and_lock(conn, keyed)
                earlier = [d for d in keyed if d.message_id in repeats] if repeats else []
                known = {i: digest for i, digest in repeats.items() if digest is not None}
                # Rows the insert could not see (committed after it began) are asked for again: rarely any.
                known |= await store.inbox_hashes(conn, (i for i, digest in repeats.items() if digest is None))
                across = classify_repeats(earlier, known)
                fresh = [d for d in part if d.message_id not in repeats] if repeats else part
                by_booking = group_events(fresh)
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
        return replace(counted(fresh, across, dead, decisions), dlq_refused=refused, recorded=known)

    async def _seen_before(self, records: Sequence[Record], digests: list[str]) -> set[int]:
        """Indexes of records whose exact bytes the inbox has recorded: duplicates, without decoding them. Only
        records ``decode`` would read as they are (``read_as_is``): a copy the client could not read whole, or one
        over a size bound, is a dead letter whatever its value (before, one after a run of repeats was dropped)."""
        hints = {
            i: hint
            for i, r in enumerate(records)
            if read_as_is(r, self._limits) and (hint := message_id_hint(r.value)) is not None
        }
        async with self._engine.connect() as conn:
            known = await store.known_payloads(conn, [(hint, digests[i]) for i, hint in hints.items()])
        return {i for i, hint in hints.items() if (hint, digests[i]) in known}


class _Countdown:
    """Calls ``then`` once: when ``done`` was called ``count`` times, or at ``finish``, whichever comes first."""

    def __init__(self, count: int, then: Callable[[], None] | None) -> None:
        self._left = count
        self._then = then
        if count <= 0:
            self.finish()

    def done(self) -> None:
        self._left -= 1
        if self._left <= 0:
            self.finish()

    def finish(self) -> None:
        then, self._then = self._then, None
        if then is not None:
            then()


def _worst(failures: Sequence[BaseException]) -> BaseException:
    """The error to raise for a batch whose parts failed: one that is not transient (a bug, say) wins, so that
    it is not retried for ever; the others are logged, not lost."""
    failures = sorted(failures, key=is_transient)
    for other in failures[1:]:
        log.warning("batch_part_failed", cause=type(other).__name__, error=first_line(other))
    return failures[0]
