"""The inbox insert (consumer/store.py) reports the repeats with their recorded payload hash in the same round trip;
a row committed after the statement began (a racing transaction it waited for) comes back without one, and
``inbox_hashes`` then finds it."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer import store
from models.records import Decoded, Record
from tests.waiting import eventually

WAITING = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%inbox%'"


def inbox_row(message_id: uuid.UUID, digest: str, offset: int = 0) -> Decoded:
    record = Record("booking.events", 0, offset, b"bk_inbox", b"{}")
    return Decoded(record, digest, message_id, "BookingConfirmed", "bk_inbox", "applied")


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
