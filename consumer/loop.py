"""The one consume loop, of ``run`` and of ``replay``: getmany, one transaction per batch (consumer.batch), offsets
committed only after it (CONTRACT "What each event does": offsets only after the transaction that holds a message's
effects has committed), transient faults retried with backoff, nothing committed meanwhile.

``run`` subscribes and goes on until SIGTERM (``ConsumerLoop.run``); ``replay`` assigns the partitions itself, seeks
to its start offsets and steps the same loop until its stop offsets are reached (``ConsumerLoop.run_to``), with a
bounded number of attempts per batch and, for a dry run, no commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from operator import attrgetter

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from consumer.batch import BatchProcessor
from consumer.catch_up import batch_limit, records_waiting
from consumer.client import commit, poll_paused, to_record
from consumer.parking import Hold, Holds
from consumer.results import BatchResult, LoopObserver, Prepared, committed_fields, merge
from models.backoff import backoff
from models.faults import error_fields
from models.records import Record

log = structlog.get_logger(__name__)

# Records per getmany call of a fetch, with a yield to the event loop between two calls: about half a millisecond
# of CPU each (aiokafka builds its records), so a transaction of the batch in hand waits at most that long to send
# its next statement while the next batch is fetched.
FETCH_SLICE = 500

_TOPIC_PARTITION = attrgetter("topic", "partition")  # of a Record

BatchHook = Callable[[BatchResult], Awaitable[None]]
# Per partition of a bounded run, the offset reached so far: the next one to apply, at most its stop offset.
Progress = Callable[[Mapping[TopicPartition, int]], None]


class Stopped(Exception):
    """Shutdown was asked for while a batch waited for the world to recover: it is left uncommitted."""


class ConsumerLoop:
    """Steppable: ``run_once`` fetches one batch, applies it and commits; ``run`` repeats until stopped (``run``),
    ``run_to`` until given offsets are reached (``replay``).

    Takes the started consumer (subscribed, or assigned and sought), the batch processor, ``max_records`` per batch
    and ``catch_up_records`` per batch while at least that many records wait (consumer.catch_up; None or 0: never
    more than ``max_records``), ``fetch_timeout_ms`` per getmany, the retry backoff (``retry_initial_s`` doubling to
    ``retry_max_s``, seconds; ``retry_attempts`` per batch, None: until the world comes back or SIGTERM),
    ``commit_offsets`` (False: a dry run, which must not move a group it may resume), two hooks around the offset
    commit, an observer for metrics, and the deadline of one offset commit (``commit_timeout_s``);
    ``raise_lost_commits`` (a bounded run): an offset commit not taken raises ``consumer.client.CommitLost`` instead
    of being logged.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        processor: BatchProcessor,
        *,
        max_records: int,
        catch_up_records: int | None = None,
        fetch_timeout_ms: int = 500,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 10.0,
        retry_attempts: int | None = None,
        commit_offsets: bool = True,
        before_offset_commit: BatchHook | None = None,
        after_commit: BatchHook | None = None,
        observer: LoopObserver | None = None,
        commit_timeout_s: float = 30.0,
        raise_lost_commits: bool = False,
    ) -> None:
        self._consumer = consumer
        self._processor = processor
        self._max_records = max_records
        self._catch_up_records = catch_up_records or max_records
        # Records the broker held past those fetched, at the last fetch: the consumer lag of the partitions being
        # fetched, from the high watermarks of the fetch responses (no request of its own).
        self._waiting = 0
        self._fetch_timeout_ms = fetch_timeout_ms
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._retry_attempts = retry_attempts
        self._commit_offsets = commit_offsets
        # Seams: tests inject a crash between the database commit and the offset commit; the service
        # wakes the outbox relay after each commit.
        self._before_offset_commit = before_offset_commit
        self._after_commit = after_commit
        self._observer = observer
        self._commit_timeout_s = commit_timeout_s
        self._raise_lost_commits = raise_lost_commits  # replay: an offset commit not taken ends the run (CommitLost)
        self._stop = asyncio.Event()
        self._ahead: asyncio.Task[Prepared | None] | None = None  # the next batch, fetched and decoded
        # ``run`` only: the previous batch's offset commit, in flight while the next batch applies.
        self._committing: asyncio.Task[None] | None = None
        # Per partition, the last offset this loop's commits had taken (``commit``): what an idle ``run`` compares
        # the consumer's position with (``_commit_skipped_offsets``).
        self._committed: dict[tuple[str, int], int] = {}
        # A bounded run (``run_to``): per partition, the first offset not to apply; and the partitions done, paused.
        self._until: dict[tuple[str, int], int] = {}
        self._done: set[TopicPartition] = set()
        self.in_hand: dict[str, int] = {}  # records per partition of the batch applied but not yet committed
        # Partitions held at a parked booking (consumer.parking).
        self._holds = Holds(
            consumer,
            locked=processor.locked,
            release=processor.release,
            observer=observer,
            initial_s=retry_initial_s,
            max_s=retry_max_s,
        )

    @property
    def processor(self) -> BatchProcessor:
        """The batch processor the loop applies batches with."""
        return self._processor

    @property
    def held(self) -> dict[TopicPartition, Hold]:
        """The partitions held at a parked booking, and where (consumer.parking.Hold)."""
        return self._holds.held

    async def run_once(self) -> BatchResult | None:
        """One batch end to end: fetched, applied (transient faults retried), offsets committed. Returns what it
        did; None when nothing arrived within the fetch timeout. Raises ``Stopped`` when shutdown was asked for
        while the batch waited for the world, and the batch's error once ``retry_attempts`` are spent (or at once,
        for an error that is not transient)."""
        batch = await self._fetch()
        if batch is None:
            await self._release_due()
            return None
        return await self._apply_and_commit(batch)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set; the batch in hand is finished and committed first, unless it is waiting
        for a database or broker to come back, in which case it is left to the next owner, uncommitted.

        One batch ahead: while a batch's transactions wait for PostgreSQL, the next one is fetched and decoded
        (CPU that would otherwise wait too; started as those transactions send their first statements), and topped
        up with what arrived meanwhile just before it is applied.
        It is applied only after the current one's transactions committed, so each partition is still applied in
        order; on stop it is dropped, uncommitted, for the next owner. A batch's offset commit (a round trip to the
        group coordinator) goes on while the next batch applies; the next commit waits for it, so offsets are
        committed in order, each after its batch's transactions (CONTRACT "What each event does"), and the last
        one before ``run`` returns.
        """
        self._stop = stop
        commit_error: BaseException | None = None
        try:
            while not stop.is_set():
                batch = await (self._ahead if self._ahead is not None else self._fetch())
                self._ahead = None
                if batch is None:
                    await self._release_due()
                    await self._commit_skipped_offsets()
                    continue
                batch = await self._top_up(batch)
                await self._apply_and_commit(batch, commit_in_background=True, sent=self._fetch_ahead)
        except Stopped:
            log.warning("batch_abandoned_on_shutdown", reason="still retrying; offsets not committed")
        finally:
            # The last batch's effects are committed: so are its offsets before ``run`` returns (the commit has its
            # own deadline). Its error is raised below, unless another one is leaving already (then it is logged).
            committing, self._committing = self._committing, None
            if committing is not None:
                await asyncio.wait([committing])
                if not committing.cancelled() and (commit_error := committing.exception()) is not None:
                    log.warning("offset_commit_failed", error=repr(commit_error))
            if self._ahead is not None:
                ahead, self._ahead = self._ahead, None
                ahead.cancel()
                # Not ``await ahead``: that would raise its error over the one leaving here, or swallow a
                # cancellation of run() itself.
                await asyncio.wait([ahead])
                if not ahead.cancelled() and ahead.exception() is not None:
                    log.warning("fetch_ahead_failed", error=repr(ahead.exception()))
        if commit_error is not None:
            raise commit_error

    async def run_to(self, until: Mapping[TopicPartition, int], progress: Progress | None = None) -> BatchResult:
        """Batch by batch (``run_once``, nothing fetched ahead) until each partition of ``until`` reached its stop
        offset (exclusive); records at or past it are not applied. The caller assigns the consumer, seeks each
        partition to its start and pauses those with nothing to do. Returns the counts of every batch together.

        After each batch, ``progress`` gets the offset each unfinished partition reached; it may raise to give up
        (a partition that stopped moving). A finished partition is paused and its stop offset committed (past any
        record the topic no longer holds, such as a transaction marker), so a later run of the group resumes there.
        Raises what ``run_once`` raises.
        """
        todo = dict(until)
        self._until = {(tp.topic, tp.partition): stop for tp, stop in until.items()}
        results: list[BatchResult] = []
        while todo:
            result = await self.run_once()
            if result is not None:
                results.append(result)
            reached = {tp: min(await self._consumer.position(tp), stop) for tp, stop in todo.items()}
            finished = {tp: stop for tp, stop in todo.items() if reached[tp] >= stop}
            if finished:
                self._consumer.pause(*finished)
                self._done |= finished.keys()
                await self.commit({(tp.topic, tp.partition): stop for tp, stop in finished.items()})
                todo = {tp: stop for tp, stop in todo.items() if tp not in finished}
            if progress is not None:
                progress(reached)
        return merge(results)

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit ``offsets`` ((topic, partition) -> the next offset to consume) as ``consumer.client.commit`` does;
        nothing for a dry run."""
        if self._commit_offsets:
            taken = await commit(self._consumer, offsets, self._commit_timeout_s, raise_lost=self._raise_lost_commits)
            self._committed.update(taken)

    async def _commit_skipped_offsets(self) -> None:
        """``run``, when a fetch brought nothing: commit each partition's position where it is past the last offset
        committed. Offsets that deliver no record (an upstream's transaction markers, its aborted records, which
        ``read_committed`` skips) end a partition's log when its producer goes quiet; a batch's commit stops at its
        last record, so without this the group's lag stayed at 1 for as long as the producer was quiet, and the
        consumer was reported stalled (/healthz red: a newcomer's find). Safe here: nothing is fetched ahead or in
        hand, so every record before a partition's position was applied, but for a parked booking's: a partition held
        there is committed no further (``Holds.capped``). Paused partitions are left as they are; a commit still in
        flight is let be (the next idle fetch comes back to it).
        A partition this loop never committed is committed once at its position, which changes nothing."""
        if not self._commit_offsets or (self._committing is not None and not self._committing.done()):
            return
        unpaused = self._consumer.assignment() - self._consumer.paused()
        positions = {(tp.topic, tp.partition): offset for tp, offset in (await self._positions(unpaused)).items()}
        # A held partition is still consumed past its parked record, but committed no further than that record.
        capped = self._holds.capped(positions)
        behind = {key: offset for key, offset in capped.items() if offset > self._committed.get(key, -1)}
        if not behind:
            return
        if self._committing is not None:
            committing, self._committing = self._committing, None
            await committing  # done: its error, if any, is raised here as the next batch would have
        log.debug("offsets_committed_past_skipped_records", partitions=len(behind))
        self._committing = asyncio.create_task(self.commit(behind), name="offset-commit")

    @property
    def batch_limit(self) -> int:
        """Records the next batch may take: the batch size, or the catch-up size while the consumer is at least
        that far behind (consumer.catch_up.batch_limit)."""
        return batch_limit(self._waiting, self._max_records, self._catch_up_records)

    async def _fetch(self, timeout_ms: int | None = None, max_records: int | None = None) -> Prepared | None:
        """Up to ``max_records`` (default: ``batch_limit``) records, prepared; None when none came within
        ``timeout_ms`` (default: the fetch timeout). Only the first getmany waits; the rest take what is buffered."""
        limit = max_records or self.batch_limit
        wait_ms = self._fetch_timeout_ms if timeout_ms is None else timeout_ms
        records: list[Record] = []
        while len(records) < limit:
            want = min(FETCH_SLICE, limit - len(records))
            fetched = await self._consumer.getmany(timeout_ms=0 if records else wait_ms, max_records=want)
            got = [to_record(m) for messages in fetched.values() for m in messages]
            records += got
            if len(got) < want:
                break
            await asyncio.sleep(0)
        waiting = None
        if self._catch_up_records > self._max_records:  # else the lag cannot change the batch size: not read
            await self._note_waiting()
            waiting = self._waiting
        if self._until:
            records = [r for r in records if r.offset < self._until.get((r.topic, r.partition), r.offset + 1)]
        if not records:
            return None
        return replace(await self._processor.prepare(records), waiting=waiting)

    async def _note_waiting(self) -> None:
        """How many records wait past those fetched, on the partitions being fetched (for ``batch_limit``): a
        paused one (held at a parked booking, or done) is not read from, however many wait on it."""
        paused = self._consumer.paused()
        ends = {
            tp: end
            for tp in self._consumer.assignment()
            if tp not in paused and (end := self._consumer.highwater(tp)) is not None
        }
        positions = await self._positions(ends)
        stops = {tp: self._until[(tp.topic, tp.partition)] for tp in ends if (tp.topic, tp.partition) in self._until}
        self._waiting = records_waiting(positions, ends, stops)

    async def _positions(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The consumer's position of each of ``partitions``, or none at all when they cannot be told now. A
        partition fetched from has a known position, and ``position`` answers at once; it waits only while the
        position is being reset, and that wait has a deadline here (the fetch timeout). A partition taken by a
        rebalance meanwhile raises (IllegalStateError, a KafkaError), as may a coordinator error: either only means
        "not now", and the next getmany meets any error that matters."""
        with contextlib.suppress(TimeoutError, KafkaError):
            async with asyncio.timeout(self._fetch_timeout_ms / 1000):
                return {tp: await self._consumer.position(tp) for tp in partitions}
        return {}

    async def _top_up(self, batch: Prepared) -> Prepared:
        """Add what arrived while ``batch`` waited (it was fetched when the batch before began): those records go
        now rather than a batch later, which matters to latency when batches are not full."""
        room = self.batch_limit - len(batch.records)
        later = await self._fetch(timeout_ms=0, max_records=room) if room > 0 else None
        return batch if later is None else batch.followed_by(later)

    def _fetch_ahead(self) -> None:
        """Start fetching and decoding the next batch, once per batch: the processor calls this as the batch in
        hand sends its first statements, so PostgreSQL has them before this process spends its CPU on the next
        fetch (started before the batch, the fetch held those statements back by its few milliseconds)."""
        if self._ahead is None:
            self._ahead = asyncio.create_task(self._fetch(), name="fetch-ahead")

    async def _apply_and_commit(
        self, batch: Prepared, *, commit_in_background: bool = False, sent: Callable[[], None] | None = None
    ) -> BatchResult:
        """Apply ``batch`` and commit its offsets; with ``commit_in_background`` (``run``) the commit and what
        follows it go on in a task after the previous batch's commit ended, and this returns once it started."""
        started = time.perf_counter()
        # Counted in C (attrgetter, Counter), named once per partition: a batch holds thousands of records.
        self.in_hand = {f"{t}/{p}": n for (t, p), n in Counter(map(_TOPIC_PARTITION, batch.records)).items()}
        result = replace(await self._apply_with_retry(batch, sent), waiting=batch.waiting)
        capped = self._holds.capped(result.next_offsets)
        if capped != result.next_offsets:
            result = replace(result, next_offsets=capped)
        if self._before_offset_commit is not None:
            await self._before_offset_commit(result)
        # Before the batch's holds take effect: the previous commit was capped by the holds it knew.
        if self._committing is not None:
            committing, self._committing = self._committing, None
            await committing  # in order: never a commit of this batch before the previous batch's
        self._holds.hold(result.held, result.parked)
        if commit_in_background:
            self._committing = asyncio.create_task(self._commit(result, started, self.in_hand), name="offset-commit")
        else:
            await self._commit(result, started, self.in_hand)
        await self._release_due()
        return result

    async def _commit(self, result: BatchResult, started: float, hand: dict[str, int]) -> None:
        """Commit the batch's offsets, report it, then the ``after_commit`` hook; ``hand`` is its ``in_hand``."""
        commit_started = time.perf_counter()
        await self.commit(result.next_offsets)
        committed_at = time.perf_counter()
        result = replace(result, total_s=committed_at - started)
        if self._observer is not None:
            self._observer.batch_committed(result, commit_s=committed_at - commit_started)
        log.info("batch_committed", **committed_fields(result, committed_at - commit_started))
        if self.in_hand is hand:  # not yet the next batch's
            self.in_hand = {}
        if self._after_commit is not None:
            await self._after_commit(result)

    async def _apply_with_retry(self, batch: Prepared, sent: Callable[[], None] | None = None) -> BatchResult:
        """Retry the same batch (the fetched position is kept) with the one backoff policy (models.backoff), polling
        meanwhile (``_wait_polling``); the error is raised once ``retry_attempts`` are spent, or at once when it is
        not transient."""
        async for attempt in backoff(
            initial_s=self._retry_initial_s,
            max_s=self._retry_max_s,
            sleep=self._wait_polling,
            on_retry=self._retrying,
            attempts=self._retry_attempts,
        ):
            with attempt:
                return await self._processor.apply(batch, sent)
        raise AssertionError("unreachable: backoff raises the last error")

    def _retrying(self, error: BaseException, wait_s: float) -> None:
        if self._observer is not None:
            self._observer.batch_retried(error)
        log.warning("batch_retry", cause=type(error).__name__, **error_fields(error), retry_in_s=round(wait_s, 2))

    async def _wait_polling(self, delay_s: float) -> None:
        """Back off without leaving the group (``consumer.client.poll_paused``); raises ``Stopped`` at SIGTERM."""
        if self._stop.is_set():
            raise Stopped
        if self._ahead is not None:
            await asyncio.wait([self._ahead])  # its getmany first: one fetch at a time (its result is kept)
        # A bounded run's finished partitions stay paused.
        await poll_paused(self._consumer, delay_s, keep_paused=self._done)
        if self._stop.is_set():
            raise Stopped

    async def _release_due(self) -> None:
        """Held partitions whose parked bookings are free again are sought back (consumer.parking.Holds.due); only
        between two batches: no batch in hand may commit a partition past that record once its hold is gone."""
        released, free = await self._holds.due()
        if not released:
            return
        await self._drop_ahead({(tp.topic, tp.partition): offset for tp, offset in released.items()})
        self._holds.release(released, free)

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
