"""It never hangs (CONTRACT, Process) on a table the batch writes locked whole by another session: held (`LOCK
TABLE`) or waited for (an `ALTER TABLE` queued behind a long transaction). Every booking waits on it alike: nothing
is parked, the batch is retried whole, and a `tables_locked` warning names the lock and, for a waiting one, the
sessions ahead of it. Apache Kafka only, as every test_deadlines_* module."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from booking_sessions.settings import Settings
from models.events import BookingEvent
from tests.integration.harness import Produced, publish
from tests.integration.watched_runs import HANG_S, Watched, second_wave, watched_run
from tests.integration.workloads import all_applied_and_published, assert_matches_reference, workload
from tests.waiting import eventually

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("apache_kafka_only")]


@contextlib.asynccontextmanager
async def first_wave_applied(
    settings: Settings, database_url: str, first: list[BookingEvent]
) -> AsyncIterator[tuple[Watched, Produced, AsyncEngine]]:
    """A watched `run` that has applied and published ``first``; an engine for the test's own sessions."""
    produced = Produced()
    await publish(settings, first, produced)
    async with watched_run(settings) as run:
        await all_applied_and_published(database_url, first, timeout_s=HANG_S)
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            yield run, produced, engine
        finally:
            await engine.dispose()


async def test_a_table_locked_whole_is_named_and_waited_for_not_taken_for_a_frozen_consumer(
    settings: Settings, database_url: str
) -> None:
    """A newcomer's find: `LOCK TABLE inbox_messages` under load made every partition's inbox probe wait, and the
    log blamed "a consumer frozen in its batch" for 2,167 parked bookings. A table lock holds every booking alike:
    nothing is parked, the batch is retried whole, and a `tables_locked` warning names the lock."""
    first, later = workload(60), second_wave(60)
    async with first_wave_applied(settings, database_url, first) as (run, produced, engine):
        async with engine.connect() as locker, locker.begin() as transaction:
            await locker.execute(text("LOCK TABLE inbox_messages IN ACCESS EXCLUSIVE MODE"))
            await publish(settings, later, produced)

            async def named() -> bool:
                said = [line for line in run.stderr if b"tables_locked" in line]
                assert said, "no tables_locked warning yet"
                assert b"inbox_messages AccessExclusiveLock" in said[0], said[0]
                return True

            await eventually(named, what="the table lock named in the log", timeout_s=HANG_S)
            await transaction.rollback()
        await all_applied_and_published(database_url, first + later, timeout_s=HANG_S)
        assert not [line for line in run.stderr if b"bookings_parked" in line], "bookings parked for a table lock"
        assert run.process.returncode is None
    await assert_matches_reference(settings, database_url, first + later)


async def test_an_alter_table_queued_behind_a_transaction_is_named_with_the_session_ahead_of_it(
    settings: Settings, database_url: str
) -> None:
    """The classic lock queue: `ALTER TABLE live_sessions` waits behind an open transaction that holds one row, and
    every batch waits behind the ALTER. The warning names the ALTER and the session ahead of it (a helper's note:
    the holder, the one to end, was not named)."""
    first, later = workload(60), second_wave(60)
    async with first_wave_applied(settings, database_url, first) as (run, produced, engine):
        async with engine.connect() as holder, holder.begin() as held, engine.connect() as migration:
            await holder.execute(text("SELECT id FROM live_sessions WHERE booking_request_id = 'bk_0001' FOR UPDATE"))
            holder_pid = (await holder.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            altering = asyncio.create_task(
                migration.execute(text("ALTER TABLE live_sessions ADD COLUMN queued_behind integer"))
            )
            await publish(settings, later, produced)

            async def named() -> bool:
                said = [line for line in run.stderr if b"tables_locked" in line]
                assert said, "no tables_locked warning yet"
                assert b"live_sessions AccessExclusiveLock pid " in said[0], said[0]
                assert f"waiting for pid {holder_pid}".encode() in said[0], said[0]
                return True

            await eventually(named, what="the queued ALTER and its blocker named", timeout_s=HANG_S)
            await held.rollback()
            await asyncio.wait_for(altering, timeout=HANG_S)
            await migration.rollback()
        await all_applied_and_published(database_url, first + later, timeout_s=HANG_S)
        assert run.process.returncode is None
    await assert_matches_reference(settings, database_url, first + later)
