"""The consumer loop: getmany, one transaction per batch, offsets committed only after it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Protocol

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError
from aiokafka.structs import OffsetAndMetadata

from consumer.batch import BatchProcessor, BatchResult, Prepared
from consumer.parking import Hold
from consumer.wire import split_unreadable
from models.backoff import jittered
from models.faults import is_transient
from models.records import Record

log = structlog.get_logger(__name__)

BatchHook = Callable[[BatchResult], Awaitable[None]]


class LoopObserver(Protocol):
    """What the loop reports for metrics (booking_sessions.observe.metrics.Metrics implements it)."""

    def batch_committed(self, result: BatchResult, *, commit_s: float, total_s: float) -> None: ...

    def batch_retried(self, error: BaseException) -> None: ...

    def holds_changed(self, parked: int, held: Mapping[str, Hold]) -> None: ...


class Stopped(Exception):
    """Shutdown was asked for while a batch waited for the world to recover: it is left uncommitted."""


def to_record(message: ConsumerRecord[bytes, bytes]) -> Record:
    """The record as plain data: headers exactly as they arrived (a null value stays None), and its timestamp."""
    raw = message.headers
    headers, unreadable = split_unreadable(tuple(raw)) if raw else ((), None)  # most records have none
    return Record(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        headers,
        message.timestamp,
        unreadable,
    )


class ConsumerLoop:
    """Steppable: ``run_once`` fetches one batch, applies it and commits; ``run`` repeats until stopped."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        processor: BatchProcessor,
        *,
        max_records: int,
        fetch_timeout_ms: int = 500,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 10.0,
        before_offset_commit: BatchHook | None = None,
        after_commit: BatchHook | None = None,
        observer: LoopObserver | None = None,
        commit_timeout_s: float = 30.0,
    ) -> None:
        self._consumer = consumer
        self._processor = processor
        self._max_records = max_records
        self._fetch_timeout_ms = fetch_timeout_ms
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        # Seams: tests inject a crash between the database commit and the offset commit; the service
        # wakes the outbox relay after each commit.
        self._before_offset_commit = before_offset_commit
        self._after_commit = after_commit
        self._observer = observer
        self._commit_timeout_s = commit_timeout_s
        self._stop = asyncio.Event()
        self._ahead: asyncio.Task[Prepared | None] | None = None  # the next batch, fetched and decoded
        self.in_hand: dict[str, int] = {}  # records per partition of the batch applied but not yet committed
        self.held: dict[TopicPartition, Hold] = {}  # partitions held at a parked booking (consumer.parking)

    @property
    def processor(self) -> BatchProcessor:
        return self._processor

    async def run_once(self) -> BatchResult | None:
        """One batch end to end; None when nothing arrived within the fetch timeout."""
        batch = await self._fetch()
        if batch is None:
            await self._release_due()
            return None
        return await self._apply_and_commit(batch)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set; the batch in hand is finished and committed first, unless it is waiting
        for a database or broker to come back, in which case it is left to the next owner, uncommitted.

        One batch ahead: while a batch's transactions wait for PostgreSQL, the next one is fetched and decoded
        (CPU that would otherwise wait too), and topped up with what arrived meanwhile just before it is applied.
        It is applied only after the current one committed its offsets, so each partition is still applied in
        order; on stop it is dropped, uncommitted, for the next owner.
        """
        self._stop = stop
        try:
            while not stop.is_set():
                batch = await (self._ahead if self._ahead is not None else self._fetch())
                self._ahead = None
                if batch is None:
                    await self._release_due()
                    continue
                batch = await self._top_up(batch)
                self._ahead = asyncio.create_task(self._fetch(), name="fetch-ahead")
                await self._apply_and_commit(batch)
        except Stopped:
            log.warning("batch_abandoned_on_shutdown", reason="still retrying; offsets not committed")
        finally:
            if self._ahead is not None:
                ahead, self._ahead = self._ahead, None
                ahead.cancel()
                # Not ``await ahead``: that would raise its error over the one leaving here, or swallow a
                # cancellation of run() itself.
                await asyncio.wait([ahead])
                if not ahead.cancelled() and ahead.exception() is not None:
                    log.warning("fetch_ahead_failed", error=repr(ahead.exception()))

    async def _fetch(self, timeout_ms: int | None = None, max_records: int | None = None) -> Prepared | None:
        batch = await self._consumer.getmany(
            timeout_ms=self._fetch_timeout_ms if timeout_ms is None else timeout_ms,
            max_records=max_records or self._max_records,
        )
        records = [to_record(m) for messages in batch.values() for m in messages]
        return await self._processor.prepare(records) if records else None

    async def _top_up(self, batch: Prepared) -> Prepared:
        """Add what arrived while ``batch`` waited (it was fetched when the batch before began): those records go
        now rather than a batch later, which matters to latency when batches are not full."""
        room = self._max_records - len(batch.records)
        later = await self._fetch(timeout_ms=0, max_records=room) if room > 0 else None
        return batch if later is None else batch.followed_by(later)

    async def _apply_and_commit(self, batch: Prepared) -> BatchResult:
        started = time.perf_counter()
        self.in_hand = dict(Counter(f"{r.topic}/{r.partition}" for r in batch.records))
        result = self._held_back(await self._apply_with_retry(batch))
        if self._before_offset_commit is not None:
            await self._before_offset_commit(result)
        commit_started = time.perf_counter()
        await self._commit(result)
        committed_at = time.perf_counter()
        if self._observer is not None:
            self._observer.batch_committed(
                result, commit_s=committed_at - commit_started, total_s=committed_at - started
            )
        log.info(
            "batch_committed",
            records=result.records,
            applied=result.applied,
            duplicates=result.duplicates,
            ignored=result.ignored,
            dead_lettered=sum(result.dead_lettered.values()),
            sessions_created=result.sessions_created,
            sessions_updated=result.sessions_updated,
            sessions_cancelled=result.sessions_cancelled + result.cancelled_unannounced,
            offsets={f"{t}/{p}": o for (t, p), o in sorted(result.next_offsets.items())},
            decode_ms=round(result.decode_s * 1000, 1),
            database_ms=round(result.database_s * 1000, 1),
            commit_ms=round((committed_at - commit_started) * 1000, 1),
            total_ms=round((committed_at - started) * 1000, 1),
        )
        self.in_hand = {}
        self._hold(result)
        await self._release_due()
        if self._after_commit is not None:
            await self._after_commit(result)
        return result

    async def _commit(self, result: BatchResult) -> None:
        owned = self._consumer.assignment()
        offsets = {
            TopicPartition(t, p): OffsetAndMetadata(o, "")
            for (t, p), o in result.next_offsets.items()
            if TopicPartition(t, p) in owned
        }
        lost = len(result.next_offsets) - len(offsets)
        try:
            if offsets:
                # aiokafka retries a commit without end while the group coordinator is unreachable (a silent
                # broker): bounded here. Skipping one is safe: the next batch's commit covers these partitions, and
                # what a crash before it redelivers, the inbox drops.
                async with asyncio.timeout(self._commit_timeout_s):
                    await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError, TimeoutError) as error:
            lost = len(result.next_offsets)
            log.warning("offset_commit_lost", error=type(error).__name__)
        if lost:
            # The effects are committed; the partition's new owner redelivers and the inbox drops the repeats.
            log.warning("offsets_not_committed_after_rebalance", partitions=lost)

    async def _apply_with_retry(self, batch: Prepared) -> BatchResult:
        """Retry the same batch (the fetched position is kept) with capped exponential backoff."""
        delay = self._retry_initial_s
        while True:
            try:
                return await self._processor.apply(batch)
            except Exception as error:
                if not is_transient(error):
                    raise
                if self._observer is not None:
                    self._observer.batch_retried(error)
                wait_s = jittered(delay)
                log.warning(
                    "batch_retry", cause=type(error).__name__, error=str(error)[:300], retry_in_s=round(wait_s, 2)
                )
            await self._wait_polling(wait_s)
            delay = min(delay * 2, self._retry_max_s)

    async def _wait_polling(self, delay_s: float) -> None:
        """Back off without leaving the group: paused partitions fetch nothing, but getmany still counts as a
        poll, so a long outage does not exceed max_poll_interval_ms and cost a rebalance."""
        if self._stop.is_set():
            raise Stopped
        if self._ahead is not None:
            await asyncio.wait([self._ahead])  # its getmany first: one fetch at a time (its result is kept)
        paused = self._consumer.assignment()
        self._consumer.pause(*paused)
        try:
            unexpected = await self._consumer.getmany(timeout_ms=int(delay_s * 1000))
            for tp, messages in unexpected.items():
                # Assigned by a rebalance during the wait, so not paused: put the position back, lose nothing.
                self._consumer.seek(tp, messages[0].offset)
        finally:
            self._consumer.resume(*(paused & self._consumer.assignment()))
        if self._stop.is_set():
            raise Stopped

    def _held_back(self, result: BatchResult) -> BatchResult:
        """The batch's offsets, none past the first parked record of a partition held since an earlier batch."""
        held = {(tp.topic, tp.partition): hold.offset for tp, hold in self.held.items()}
        offsets = {tp: min(offset, held.get(tp, offset)) for tp, offset in result.next_offsets.items()}
        return result if offsets == result.next_offsets else replace(result, next_offsets=offsets)

    def _hold(self, result: BatchResult) -> None:
        """After a commit: a partition where the batch parked a booking is held at its first parked record. It is
        still consumed (its other bookings go on; the parked booking's later records are parked too, without
        waiting), but its commits stop there until ``_release_due`` finds the lock gone."""
        owned = self._consumer.assignment()
        gone = [tp for tp in self.held if tp not in owned]  # moved away: its new owner starts at the hold
        if gone:
            forgotten = frozenset().union(*(self.held.pop(tp).bookings for tp in gone))
            self._processor.release(forgotten - self._held_bookings())
        now = time.monotonic()
        for (topic, partition), offset in result.held.items():
            tp = TopicPartition(topic, partition)
            if tp not in owned:
                continue
            before = self.held.get(tp)
            if before is None:
                delay_s = self._retry_initial_s
                self.held[tp] = Hold(offset, result.parked, now, delay_s, now + jittered(delay_s))
            else:
                self.held[tp] = replace(
                    before, offset=min(before.offset, offset), bookings=before.bookings | result.parked
                )
        if result.held:
            log.warning(
                "partitions_held",
                partitions={f"{tp.topic}/{tp.partition}": h.offset for tp, h in sorted(self.held.items())},
                bookings=sorted(result.parked)[:20],
                reason="session row locked by another session (SQLSTATE 55P03)",
            )
        if (gone or result.held) and self._observer is not None:
            self._observer.holds_changed(len(result.parked), self._holds())

    async def _release_due(self) -> None:
        """Each held partition whose backoff is over: if its parked bookings are no longer locked, it is sought back
        to its first parked record, which comes again with everything after it (the inbox drops the repeats), so
        each booking's events still apply in order; else the backoff doubles, up to the retry cap. Only between two
        batches: no batch in hand may commit the partition past that record once its hold is gone."""
        now = time.monotonic()
        due = [(tp, hold) for tp, hold in self.held.items() if hold.resume_at <= now]
        if not due:
            return
        asked = frozenset().union(*(hold.bookings for _, hold in due))
        free = asked - await self._processor.locked(asked)
        if not free:
            for tp, hold in due:
                delay_s = min(hold.delay_s * 2, self._retry_max_s)
                self.held[tp] = replace(hold, delay_s=delay_s, resume_at=now + jittered(delay_s))
            return
        # Every partition where a freed booking was parked goes back, together: none of its events may overtake
        # another. A booking still locked stays parked, and is held again where its records come again.
        released = {tp: hold.offset for tp, hold in self.held.items() if hold.bookings & free}
        await self._drop_ahead({(tp.topic, tp.partition): offset for tp, offset in released.items()})
        owned = self._consumer.assignment()
        for tp, offset in released.items():
            del self.held[tp]
            if tp in owned:
                self._consumer.seek(tp, offset)
            log.info("partition_released", partition=f"{tp.topic}/{tp.partition}", from_offset=offset)
        self._processor.release(free)
        if self._observer is not None:
            self._observer.holds_changed(0, self._holds())

    def _held_bookings(self) -> frozenset[str]:
        return frozenset().union(*(hold.bookings for hold in self.held.values()))

    def _holds(self) -> dict[str, Hold]:
        return {f"{tp.topic}/{tp.partition}": hold for tp, hold in self.held.items()}

    async def _drop_ahead(self, held: Mapping[tuple[str, int], int]) -> None:
        """The batch fetched ahead must not apply what a partition sought back will deliver again, in order."""
        if self._ahead is None:
            return
        await asyncio.wait([self._ahead])  # its getmany ends before the seek: one fetch at a time
        if self._ahead.cancelled() or self._ahead.exception() is not None:
            return  # the run loop meets it when it awaits the task
        ahead = self._ahead.result()
        if ahead is None:
            return
        kept = ahead.without(lambda r: r.offset >= held.get((r.topic, r.partition), r.offset + 1))
        self._ahead = asyncio.create_task(_given(kept if kept.records else None), name="fetch-ahead")


async def _given(batch: Prepared | None) -> Prepared | None:
    return batch
