"""Bookings whose rows another transaction holds, set aside ("parked") so the rest goes on.

A part's transaction that meets a row lock held elsewhere fails after ``lock_timeout`` with SQLSTATE 55P03. Two
holders are found: a session row locked by another session (an operator's open transaction, say), found without
waiting (``FOR UPDATE SKIP LOCKED``); and inbox rows of the part's records that another transaction inserted and has
not ended (a zombie consumer frozen inside its batch after a rebalance gave its partitions here: its rows are not
committed, so no lookup sees them), found by inserting the part's inbox rows again, a partition at a time, with a
short ``lock_timeout`` in a transaction that is rolled back. Rather than retry the whole batch, and hold every
partition with it, the part is applied without any record of those bookings, and their later records are parked too
until the rows are free. Their partitions go on but commit
no further than the first parked record (CONTRACT: offsets only after the effects are durable); once the lock is
gone the loop seeks back to it: the records after it come again and the inbox drops them as repeats, so each
booking's events still apply in partition order.

Two sides: ``Parking`` is the batch processor's (which bookings to leave out of a transaction), ``Holds`` the consume
loop's (which partitions may commit how far, and when to look at the locks again).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.store import insert_inbox
from models.backoff import jittered
from models.faults import sqlstate
from models.records import Decoded, Record

log = structlog.get_logger(__name__)

LOCK_NOT_AVAILABLE = "55P03"
# How long the inbox probe waits for another transaction's uncommitted inbox rows before it counts them as held: far
# longer than a live batch's transaction takes to commit, short enough that a probe over dozens of partitions, each
# held by a frozen consumer, ends within seconds.
INBOX_PROBE_LOCK_TIMEOUT_MS = 200
# The look again at parked records' inbox rows, between two batches: only a holder that has not ended in the
# seconds since they were parked holds them (a frozen consumer), so a shorter wait tells; and the loop waits for it.
INBOX_RECHECK_LOCK_TIMEOUT_MS = 50

# One unique-index lookup per id, whatever plan PostgreSQL keeps for the statement (consumer/store.py, above
# _INSERT_INBOX, says why: not `= ANY(:ids)`).
_EXISTING = text(
    "SELECT s.booking_request_id FROM unnest(CAST(:ids AS text[])) AS asked(booking_id) CROSS JOIN LATERAL"
    " (SELECT booking_request_id FROM live_sessions WHERE booking_request_id = asked.booking_id LIMIT 1) AS s"
)
_LOCKABLE = text(
    "SELECT s.booking_request_id FROM unnest(CAST(:ids AS text[])) AS asked(booking_id) CROSS JOIN LATERAL"
    " (SELECT booking_request_id FROM live_sessions WHERE booking_request_id = asked.booking_id LIMIT 1"
    " FOR UPDATE SKIP LOCKED) AS s"
)

# A lock on a whole table the batch writes, held or waited for by another session, in a mode that conflicts with a
# row write (LOCK TABLE, most ALTER TABLE, VACUUM FULL, REINDEX, CREATE INDEX without CONCURRENTLY): a waiting one
# counts too, as the batch's statements queue behind it. Tables by name through the search path, as the statements
# find them; one renamed away is simply not there.
BATCH_TABLES = ("inbox_messages", "live_sessions", "session_participants", "session_reservations", "outbox_messages")
_TABLE_LOCKS = text(
    "SELECT c.relname, l.mode, l.granted, l.pid,"
    " CASE WHEN l.granted THEN '{}'::int[] ELSE pg_blocking_pids(l.pid) END AS blockers"
    " FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
    " WHERE l.pid <> pg_backend_pid()"
    " AND l.relation IN (SELECT to_regclass(t) FROM unnest(CAST(:tables AS text[])) AS t)"
    " AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')"
    " ORDER BY c.relname, l.pid"
)


def is_lock_wait(error: BaseException) -> bool:
    """True when PostgreSQL gave up waiting for a lock (``lock_timeout``, SQLSTATE 55P03)."""
    return sqlstate(error) == LOCK_NOT_AVAILABLE


def bookings_of(part: Iterable[Decoded]) -> set[str]:
    """The booking ids the records of ``part`` name (undecodable records name none)."""
    return {d.booking_id for d in part if d.booking_id is not None}


def without(part: Sequence[Decoded], parked: Collection[str]) -> list[Decoded]:
    """``part`` less every record of a parked booking, in the same order."""
    if not parked:
        return list(part)
    return [d for d in part if d.booking_id not in parked]


def held_offsets(parked: Iterable[Record]) -> dict[tuple[str, int], int]:
    """Per partition, the offset of its first parked record: where its consumption resumes, and the most its
    committed offset may be (every record before it was applied; it was not)."""
    held: dict[tuple[str, int], int] = {}
    for r in parked:
        tp = (r.topic, r.partition)
        held[tp] = min(held.get(tp, r.offset), r.offset)
    return held


def hold_back(
    offsets: Mapping[tuple[str, int], int], held: Mapping[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    """The offsets to commit: ``offsets`` (past each partition's last record), but never past a held record."""
    return {**offsets, **{tp: min(offsets.get(tp, offset), offset) for tp, offset in held.items()}}


class Parking:
    """Finds the bookings whose rows another transaction holds, and keeps them parked until the loop releases them:
    their later records are parked too, without a lock wait, so none of a booking's events overtakes one parked
    before it; the loop looks at the rows (``locked``) between batches and releases them once they are free."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.held: set[str] = set()
        # The records of each booking parked on inbox rows another transaction inserted: what ``locked`` inserts
        # again to see whether they are still held (a session row is looked up by its booking id alone).
        self._inbox_waits: dict[str, list[Decoded]] = {}

    def parked_in(self, part: Sequence[Decoded]) -> set[str]:
        """The bookings of ``part`` parked before and not released yet."""
        return bookings_of(part) & self.held if self.held else set()

    async def park(self, part: Sequence[Decoded]) -> set[str]:
        """After a lock wait gave up: which bookings of ``part`` have rows another transaction holds (a session row
        locked, or an inbox row of one of their records not yet committed elsewhere); they are parked until
        released. Raises what the database raises.

        Nothing is parked while one of the batch's tables is locked whole by another session (``_TABLE_LOCKS``):
        every booking waits on that alike, the inbox probe would take it for a frozen consumer on every partition,
        and the batch is retried whole instead, the lock named in a ``tables_locked`` warning."""
        tables = await self._tables_locked()
        if tables:
            log.warning(
                "tables_locked",
                locks=tables,
                reason="a table lock another session holds or waits for (LOCK TABLE, ALTER TABLE, VACUUM FULL, "
                "REINDEX...): the batch waits for it, nothing is parked",
            )
            return set()
        rows_locked = await self._sessions_locked(bookings_of(part))
        if rows_locked:
            log.warning("bookings_parked", bookings=sorted(rows_locked), reason="session row locked by another session")
        rest = without(part, rows_locked)
        inbox_held: set[str] = set()
        for held in await self._inbox_held(_by_partition(rest), INBOX_PROBE_LOCK_TIMEOUT_MS):
            inbox_held |= bookings_of(held)
        if inbox_held:
            for d in rest:
                if d.booking_id in inbox_held:
                    self._inbox_waits.setdefault(d.booking_id, []).append(d)
            log.warning(
                "bookings_parked",
                bookings=sorted(inbox_held)[:20],
                count=len(inbox_held),
                reason="inbox rows inserted by another transaction not yet ended (a consumer frozen in its batch?)",
            )
        self.held |= rows_locked | inbox_held
        return rows_locked | inbox_held

    def release(self, booking_ids: Collection[str]) -> None:
        """The loop went back to the first parked record of these bookings: their records apply again."""
        self.held -= set(booking_ids)
        for booking_id in booking_ids:
            self._inbox_waits.pop(booking_id, None)

    async def locked(self, booking_ids: Collection[str]) -> set[str]:
        """Which of ``booking_ids`` still have rows another transaction holds, now: a session row that exists but
        that ``SKIP LOCKED`` passes over, or (for the bookings parked on inbox rows) an inbox row of their parked
        records still not committed elsewhere. Those are looked at together, all or none: a frozen consumer's rows
        are freed together (its transaction ends), and one wait of INBOX_RECHECK_LOCK_TIMEOUT_MS at most, not one
        per partition, holds up the loop that asks. Changes nothing (every transaction is rolled back).

        Raises what the database raises (transient or not), like any statement."""
        rows_locked = await self._sessions_locked(booking_ids)
        waiting = [d for b in booking_ids if b not in rows_locked for d in self._inbox_waits.get(b, ())]
        if waiting and await self._inbox_held([waiting], INBOX_RECHECK_LOCK_TIMEOUT_MS):
            return rows_locked | bookings_of(waiting)
        return rows_locked

    async def _tables_locked(self) -> list[str]:
        """The locks on the batch's tables (BATCH_TABLES) that conflict with its writes, held or waited for by other
        sessions, as "table mode pid N", or "table mode pid N waiting for pid M, ..." (the sessions ahead of it, which
        hold it up: an ALTER TABLE queued behind a long transaction); none when there is none."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_TABLE_LOCKS, {"tables": list(BATCH_TABLES)})).all()
        said = []
        for table, mode, granted, pid, blockers in rows:
            ahead = ", ".join(map(str, blockers)) or "?"
            said.append(f"{table} {mode} pid {pid}" + ("" if granted else f" waiting for pid {ahead}"))
        return said

    async def _sessions_locked(self, booking_ids: Collection[str]) -> set[str]:
        """Which of ``booking_ids`` have a session row another transaction holds locked: one short transaction,
        rolled back; it never waits for a row lock."""
        ids = sorted(booking_ids)
        if not ids:
            return set()
        async with self._engine.connect() as conn, conn.begin() as transaction:
            existing = set((await conn.scalars(_EXISTING, {"ids": ids})).all())
            free = set((await conn.scalars(_LOCKABLE, {"ids": ids})).all()) if existing else set()
            await transaction.rollback()
        return existing - free

    async def _inbox_held(self, groups: Sequence[Sequence[Decoded]], timeout_ms: int) -> list[Sequence[Decoded]]:
        """The groups of records whose inbox rows another transaction holds: each group's inbox rows inserted again
        as the batch inserts them (``store.insert_inbox``), under a savepoint of its own, waiting ``timeout_ms`` at
        most; the whole transaction is rolled back, so nothing is kept. Records without a message id are left out
        (they have no inbox row to wait on)."""
        keyed = [[d for d in group if d.message_id is not None] for group in groups]
        if not any(keyed):
            return []
        held: list[Sequence[Decoded]] = []
        async with self._engine.connect() as conn, conn.begin() as transaction:
            await conn.execute(text(f"SET LOCAL lock_timeout = '{int(timeout_ms)}ms'"))
            for group in keyed:
                if not group:
                    continue
                try:
                    async with conn.begin_nested():
                        await insert_inbox(conn, group)
                except Exception as error:
                    if not is_lock_wait(error):
                        raise
                    held.append(group)
            await transaction.rollback()
        return held


def _by_partition(part: Sequence[Decoded]) -> list[list[Decoded]]:
    """The records of ``part`` that name a booking, grouped by input partition: the unit the inbox probe tries.

    A partition at a time, not a booking at a time: a frozen consumer holds a run of each of its partitions'
    records, so a partition is the unit it holds, and the probe costs one short wait per held partition rather than
    per booking. Every booking of a held partition in the part is parked: those the holder does not have wait with
    the partition's commit, which stops at its first parked record anyway."""
    groups: defaultdict[tuple[str, int], list[Decoded]] = defaultdict(list)
    for d in part:
        if d.booking_id is not None:
            groups[(d.record.topic, d.record.partition)].append(d)
    return [groups[key] for key in sorted(groups)]


@dataclass(frozen=True, slots=True)
class Hold:
    """A partition held at its first parked record: still consumed, but committed no further than ``offset``; its
    parked bookings' locks are looked at again from ``resume_at`` (monotonic seconds throughout; ``delay_s`` is this
    round's backoff, doubled each round up to a cap), and once one is gone it is consumed from ``offset`` again."""

    offset: int
    bookings: frozenset[str]  # the bookings parked in the batch that held it
    since: float  # first held (a partition held round after round keeps it)
    delay_s: float
    resume_at: float


class HoldObserver(Protocol):
    """What the holds report for metrics and health (booking_sessions.observe.metrics.Metrics implements it)."""

    def holds_changed(self, parked: int, held: Mapping[str, Hold]) -> None:
        """``parked`` bookings were just parked (0: a release); ``held`` is every held partition now, by
        "topic/partition"."""


class Holds:
    """The consume loop's side of parking: per partition, the first parked record its commits may not pass, and when
    its parked bookings' locks are looked at again.

    Why not ``models.backoff.backoff``: that one waits inside one call, while a hold's rounds are looked at between
    batches (the loop must go on consuming the partition's other bookings meanwhile). The schedule is the same
    policy: doubling from ``initial_s`` up to ``max_s`` (seconds), each wait ``jittered``.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        *,
        locked: Callable[[frozenset[str]], Awaitable[set[str]]],
        release: Callable[[Collection[str]], None],
        observer: HoldObserver | None,
        initial_s: float,
        max_s: float,
    ) -> None:
        self._consumer = consumer
        self._locked = locked  # which of these bookings are still locked (BatchProcessor.locked)
        self._release = release  # these bookings apply again (BatchProcessor.release)
        self._observer = observer
        self._initial_s = initial_s
        self._max_s = max_s
        self.held: dict[TopicPartition, Hold] = {}

    def capped(self, offsets: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """``offsets`` to commit ((topic, partition) -> next offset), none past the first parked record of a
        partition held since an earlier batch."""
        held = {(tp.topic, tp.partition): hold.offset for tp, hold in self.held.items()}
        return {tp: min(offset, held.get(tp, offset)) for tp, offset in offsets.items()}

    def hold(self, held: Mapping[tuple[str, int], int], parked: frozenset[str]) -> None:
        """After a commit: each partition of ``held`` (its first parked record's offset) where the batch parked the
        bookings ``parked`` is held there. It is still consumed (its other bookings go on; the parked booking's later
        records are parked too, without waiting), but its commits stop there until ``due`` finds the lock gone.
        A held partition that moved to another consumer is forgotten: its new owner starts at the hold. So are the
        bookings of a batch whose held partitions all moved before its commit (a rebalance while it was applied):
        released at once, else they stayed parked, without a hold to release them, until their partition came
        back."""
        owned = self._consumer.assignment()
        gone = [tp for tp in self.held if tp not in owned]
        if gone:
            forgotten = frozenset().union(*(self.held.pop(tp).bookings for tp in gone))
            self._release(forgotten - self.bookings())
        now = time.monotonic()
        kept = False
        for (topic, partition), offset in held.items():
            tp = TopicPartition(topic, partition)
            if tp not in owned:
                continue
            kept = True
            before = self.held.get(tp)
            if before is None:
                self.held[tp] = Hold(offset, parked, now, self._initial_s, now + jittered(self._initial_s))
            else:
                self.held[tp] = replace(before, offset=min(before.offset, offset), bookings=before.bookings | parked)
        if parked and not kept:
            self._release(parked - self.bookings())
        if held:
            log.warning(
                "partitions_held",
                partitions={f"{tp.topic}/{tp.partition}": h.offset for tp, h in sorted(self.held.items())},
                bookings=sorted(parked)[:20],
                reason="rows held by another transaction (SQLSTATE 55P03)",
            )
        if gone or held:
            self._changed(len(parked))

    async def due(self) -> tuple[dict[TopicPartition, int], frozenset[str]]:
        """The held partitions to seek back now (partition -> its first parked record) and the bookings freed.

        Each partition whose backoff is over: if its parked bookings are no longer locked, it goes back to its first
        parked record, with every partition where a freed booking was parked (none of its events may overtake
        another); else its backoff doubles, up to ``max_s``. Nothing is released yet: the loop calls ``release``
        once nothing fetched ahead can commit past those records."""
        now = time.monotonic()
        due = [(tp, hold) for tp, hold in self.held.items() if hold.resume_at <= now]
        if not due:
            return {}, frozenset()
        asked = frozenset().union(*(hold.bookings for _, hold in due))
        free = asked - await self._locked(asked)
        if not free:
            for tp, hold in due:
                delay_s = min(hold.delay_s * 2, self._max_s)
                self.held[tp] = replace(hold, delay_s=delay_s, resume_at=now + jittered(delay_s))
            return {}, frozenset()
        return {tp: hold.offset for tp, hold in self.held.items() if hold.bookings & free}, free

    def release(self, partitions: Mapping[TopicPartition, int], free: frozenset[str]) -> None:
        """Seek each of ``partitions`` back to its first parked record (the records after it come again, and the
        inbox drops the repeats) and let the ``free`` bookings apply again. A booking still locked stays parked,
        and is held again where its records come again."""
        owned = self._consumer.assignment()
        for tp, offset in partitions.items():
            del self.held[tp]
            if tp in owned:
                self._consumer.seek(tp, offset)
            log.info("partition_released", partition=f"{tp.topic}/{tp.partition}", from_offset=offset)
        self._release(free)
        self._changed(0)

    def bookings(self) -> frozenset[str]:
        """Every booking parked in a held partition."""
        return frozenset().union(*(hold.bookings for hold in self.held.values()))

    def _changed(self, parked: int) -> None:
        if self._observer is not None:
            self._observer.holds_changed(parked, {f"{tp.topic}/{tp.partition}": h for tp, h in self.held.items()})
