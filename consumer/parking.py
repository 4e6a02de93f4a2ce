"""Bookings whose session row another session holds locked, set aside ("parked") so the rest goes on.

A part's transaction that meets a row lock held elsewhere (an operator's open transaction, say) fails after
``lock_timeout`` with SQLSTATE 55P03. Rather than retry the whole batch, and hold every partition with it, the
bookings that are locked are found without waiting (``FOR UPDATE SKIP LOCKED``) and the part is applied without any
of their records, and their later records are parked too until the lock is gone. Their partitions go on but commit
no further than the first parked record (CONTRACT: offsets only after the effects are durable); once the lock is
gone the loop seeks back to it: the records after it come again and the inbox drops them as repeats, so each
booking's events still apply in partition order.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.faults import sqlstate
from models.records import Decoded, Record

log = structlog.get_logger(__name__)

LOCK_NOT_AVAILABLE = "55P03"

_EXISTING = text("SELECT booking_request_id FROM live_sessions WHERE booking_request_id = ANY(CAST(:ids AS text[]))")
_LOCKABLE = text(
    "SELECT booking_request_id FROM live_sessions WHERE booking_request_id = ANY(CAST(:ids AS text[]))"
    " FOR UPDATE SKIP LOCKED"
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
    """Finds the bookings held by a lock elsewhere, and keeps them parked until the loop releases them: their later
    records are parked too, without a lock wait, so none of a booking's events overtakes one parked before it; the
    loop looks at the lock (``locked``) between batches and releases them once it is gone."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.held: set[str] = set()

    def parked_in(self, part: Sequence[Decoded]) -> set[str]:
        """The bookings of ``part`` parked before and not released yet."""
        return bookings_of(part) & self.held if self.held else set()

    async def park(self, booking_ids: Collection[str]) -> set[str]:
        """After a lock wait gave up: which of ``booking_ids`` are locked elsewhere; they are parked until released."""
        locked = await self.locked(booking_ids)
        if locked:
            self.held |= locked
            log.warning("bookings_parked", bookings=sorted(locked), reason="session row locked by another session")
        return locked

    def release(self, booking_ids: Collection[str]) -> None:
        """The loop went back to the first parked record of these bookings: their records apply again."""
        self.held -= set(booking_ids)

    async def locked(self, booking_ids: Collection[str]) -> set[str]:
        """Which of ``booking_ids`` have a session row another transaction holds locked, now: rows that exist but
        that ``SKIP LOCKED`` passes over. A short transaction, rolled back; it never waits for a row lock.

        Raises what the database raises (transient or not), like any statement."""
        ids = sorted(booking_ids)
        if not ids:
            return set()
        async with self._engine.connect() as conn, conn.begin() as transaction:
            existing = set((await conn.scalars(_EXISTING, {"ids": ids})).all())
            free = set((await conn.scalars(_LOCKABLE, {"ids": ids})).all()) if existing else set()
            await transaction.rollback()
        return existing - free


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
