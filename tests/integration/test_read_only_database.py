"""A database that turns read-only (a failover that left the service's connections on the demoted primary, now a
standby; a `default_transaction_read_only` set by an operator): every write fails with SQLSTATE 25006, for every
record alike. That is the world's fault: the batch is retried with backoff, nothing is dead-lettered, the process
stays up, and once the database takes writes again everything is applied, without a restart: the connections that
met the refusal are replaced, not kept (a kept one stays read-only, as a session's defaults are read when it
starts)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import NullPool, make_url, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from booking_sessions.settings import Settings
from tests.integration.harness import Produced, publish, query
from tests.integration.operator_cli import assert_one_line_error, invoke
from tests.integration.watched_runs import HANG_S, second_wave, watched_run
from tests.integration.workloads import all_applied_and_published, assert_matches_reference, workload
from tests.waiting import eventually

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("apache_kafka_only")]


@pytest.fixture
async def admin(database_url: str) -> AsyncIterator[AsyncConnection]:
    """A connection that may write whatever the database's default (autocommit: each statement its own)."""
    engine = create_async_engine(
        database_url,
        poolclass=NullPool,
        connect_args={"server_settings": {"default_transaction_read_only": "off"}},
        isolation_level="AUTOCOMMIT",
    )
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()


async def test_a_database_turned_read_only_is_waited_for_and_written_once_it_takes_writes(
    settings: Settings, database_url: str, admin: AsyncConnection
) -> None:
    database = make_url(database_url).database
    first, later = workload(60), second_wave(60)
    produced = Produced()
    await publish(settings, first, produced)
    async with watched_run(settings) as run:
        await all_applied_and_published(database_url, first, timeout_s=HANG_S)
        await admin.execute(text(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on'))
        # As a failover does: the service's sessions end, and the ones it opens next are read-only.
        await admin.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        await publish(settings, later, produced)

        async def refused_and_retried() -> bool:
            retries = [line for line in run.stderr if b"batch_retry" in line and b"read-only" in line]
            assert retries, "no batch retried for the read-only database yet"
            return True

        await eventually(refused_and_retried, what="a batch retried on SQLSTATE 25006", timeout_s=HANG_S)
        assert run.process.returncode is None, "the service exited on a read-only database"
        dead = await query(database_url, "SELECT count(*) AS n FROM inbox_messages WHERE outcome = 'dead_lettered'")
        assert dead == [{"n": 0}], "records dead-lettered for the database's refusal"
        # An operator's command that writes says why it cannot, in one line.
        refused = await invoke(settings, "outbox", "republish", "--booking", "bk_0000")
        assert_one_line_error(refused, "the database refuses writes (read-only")
        # Writable again, the service's sessions left as they are: those that met the refusal must not be reused.
        await admin.execute(text(f'ALTER DATABASE "{database}" RESET default_transaction_read_only'))
        await all_applied_and_published(database_url, first + later, timeout_s=HANG_S)
        assert run.process.returncode is None
        assert not [line for line in run.stderr if b"dead_letter" in line.lower() and b"read-only" in line]
    await assert_matches_reference(settings, database_url, first + later)


async def test_run_started_on_a_read_only_database_waits_for_writes(
    settings: Settings, database_url: str, admin: AsyncConnection
) -> None:
    """Started during a failover (the address still leads to a standby): the meeting key's first record is refused as
    read-only; `run` waits for the database to take writes (no crash loop), then applies everything."""
    database = make_url(database_url).database
    events = workload(30)
    await publish(settings, events, Produced())
    await admin.execute(text(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on'))
    async with watched_run(settings) as run:

        async def waiting() -> bool:
            said = [line for line in run.stderr if b"retry" in line and b"read-only" in line]
            assert said, "no retry for the read-only database yet"
            return True

        await eventually(waiting, what="`run` to wait for the read-only database", timeout_s=HANG_S)
        assert run.process.returncode is None, "`run` exited on a read-only database"
        await admin.execute(text(f'ALTER DATABASE "{database}" RESET default_transaction_read_only'))
        await all_applied_and_published(database_url, events, timeout_s=HANG_S)
        assert run.process.returncode is None
    await assert_matches_reference(settings, database_url, events)
