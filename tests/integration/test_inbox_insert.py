"""The inbox insert (consumer/store.py) reports the repeats with their recorded payload hash in the same round trip;
a row committed after the statement began (a racing transaction it waited for) comes back without one, and
``inbox_hashes`` then finds it. The batch path's form of it (``insert_inbox_and_lock``) also locks, in the same
statement and in every writer's lock order, the session rows of exactly the bookings that have a new event."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer import store
from models.records import Decoded, Outcome, Record
from tests.waiting import eventually

WAITING = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%inbox%'"


def inbox_row(
    message_id: uuid.UUID, digest: str, offset: int = 0, booking_id: str = "bk_inbox", outcome: Outcome = "applied"
) -> Decoded:
    record = Record("booking.events", 0, offset, booking_id.encode(), b"{}")
    # Only the fields the inbox statements read; an applied record's event is what the caller groups by.
    return Decoded(record, digest, message_id, "BookingConfirmed", booking_id, outcome)


SESSION = """
INSERT INTO live_sessions (id, booking_request_id, instructor_id, student_id, scheduled_start, duration_minutes,
    meeting_link, snapshot_occurred_at, snapshot_message_id)
SELECT gen_random_uuid(), b, 'u_7', 'u_42', now(), 60, 'https://meet.example/' || b, now(), gen_random_uuid()
FROM unnest(CAST(:bookings AS text[])) AS b
"""
LOCK_NOWAIT = "SELECT 1 FROM live_sessions WHERE booking_request_id = :booking FOR UPDATE NOWAIT"


async def lockable(engine: AsyncEngine, booking: str) -> bool:
    """Whether another transaction may lock ``booking``'s session row now."""
    async with engine.begin() as other:
        try:
            await other.execute(text(LOCK_NOWAIT), {"booking": booking})
        except exc.DBAPIError as error:  # asyncpg's LockNotAvailableError, as SQLAlchemy wraps it
            assert "could not obtain lock" in str(error)
            return False
    return True


async def test_new_rows_report_nothing_and_repeats_their_recorded_hash(engine: AsyncEngine) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    async with engine.begin() as conn:
        assert await store.insert_inbox(conn, [inbox_row(first, "a" * 64)]) == {}
    async with engine.begin() as conn:
        repeats = await store.insert_inbox(conn, [inbox_row(first, "b" * 64, 1), inbox_row(second, "c" * 64, 2)])
    assert repeats == {first: "a" * 64}  # the hash recorded first, not the repeat's


async def test_a_row_committed_while_the_insert_waited_comes_back_without_a_hash(engine: AsyncEngine) -> None:
    racing = uuid.uuid4()
    async with engine.connect() as holder, engine.connect() as waiter:
        holding = await holder.begin()
        await store.insert_inbox(holder, [inbox_row(racing, "d" * 64)])  # uncommitted: the waiter's insert blocks
        waiting = await waiter.begin()
        insert = asyncio.create_task(store.insert_inbox(waiter, [inbox_row(racing, "e" * 64, 1)]))

        async def blocked() -> bool:
            async with engine.connect() as watcher:
                rows = await watcher.execute(text(WAITING))
                return bool(rows.scalar_one())

        await eventually(blocked, timeout_s=10, what="the second insert waiting for the first transaction")
        await holding.commit()
        repeats = await asyncio.wait_for(insert, timeout=10)
        assert repeats == {racing: None}  # a repeat, but committed after the statement's snapshot
        assert await store.inbox_hashes(waiter, [racing]) == {racing: "d" * 64}  # a new statement sees it
        await waiting.rollback()


async def test_the_batch_form_locks_the_sessions_of_new_applied_records_only(engine: AsyncEngine) -> None:
    fresh, repeated, dead, newcomer = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(text(SESSION), {"bookings": ["bk_fresh", "bk_repeat", "bk_dead"]})
        await store.insert_inbox(conn, [inbox_row(repeated, "a" * 64, booking_id="bk_repeat")])
    async with engine.connect() as conn, conn.begin():
        repeats, sessions = await store.insert_inbox_and_lock(
            conn,
            [
                inbox_row(fresh, "b" * 64, 1, "bk_fresh"),
                inbox_row(repeated, "c" * 64, 2, "bk_repeat"),  # in the inbox already: changes nothing
                inbox_row(dead, "d" * 64, 3, "bk_dead", "dead_lettered"),  # no event to apply
                inbox_row(newcomer, "e" * 64, 4, "bk_new"),  # new, but no session row yet
            ],
        )
        assert repeats == {repeated: "a" * 64}
        assert list(sessions) == ["bk_fresh"]
        assert sessions["bk_fresh"].meeting_link == "https://meet.example/bk_fresh"
        # Held until this transaction ends; the others are free.
        assert not await lockable(engine, "bk_fresh")
        assert await lockable(engine, "bk_repeat")
        assert await lockable(engine, "bk_dead")
        recorded = await conn.execute(text("SELECT count(*) FROM inbox_messages"))
        assert recorded.scalar_one() == 4  # the three new rows and the one before
    assert await lockable(engine, "bk_fresh")


async def test_the_batch_form_locks_in_the_order_every_writer_locks(engine: AsyncEngine) -> None:
    # lock_sessions (and so `meeting rekey`) locks in Python's sorted() order: this statement must too, or two
    # writers could each hold a row the other waits for. Booking ids are ASCII; these differ in case and punctuation.
    bookings = ["bk_b", "BK_a", "bk-9", "bk_10", "bk_9", "bk_B", "bk.1", "bk_a~"]
    async with engine.begin() as conn:
        await conn.execute(text(SESSION), {"bookings": bookings})
    async with engine.begin() as conn:
        rows = [inbox_row(uuid.uuid4(), "f" * 64, i, b) for i, b in enumerate(bookings)]
        _, sessions = await store.insert_inbox_and_lock(conn, rows)
    assert list(sessions) == sorted(bookings)  # each row comes back as it is locked


async def test_the_batch_form_of_nothing_asks_nothing(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        assert await store.insert_inbox_and_lock(conn, []) == ({}, {})
