"""`run` started while PostgreSQL is away waits for it (no crash loop), then starts: the meeting-key check at start
retries a database that is away; a key that does not fit is still refused at once (test_meeting_rekey.py)."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from booking_sessions.dev.postgres import PostgresCluster
from booking_sessions.service import open_service
from booking_sessions.settings import Settings
from tests.integration.harness import query
from tests.servers import PostgresHandle
from tests.waiting import eventually

pytestmark = pytest.mark.faults


async def test_run_waits_for_an_absent_database_at_start(postgres: PostgresHandle, settings: Settings) -> None:
    if not isinstance(postgres.server, PostgresCluster):
        pytest.skip("the database is not ours to stop (env or testcontainers)")

    async def start() -> str:
        async with open_service(settings):
            return "started"

    outage = postgres.server.down()
    await asyncio.to_thread(outage.__enter__)
    with capture_logs() as logs:
        task = asyncio.create_task(start())
        try:

            async def retried_twice() -> bool:
                assert not task.done(), f"open_service ended while the database was away: {task}"
                retries: int = sum(line["event"] == "meeting_key_check_retry" for line in logs)
                return retries >= 2

            await eventually(retried_twice, what="two retries of the meeting-key check", timeout_s=60)
        finally:
            await asyncio.to_thread(outage.__exit__, None, None, None)
        assert await asyncio.wait_for(task, timeout=60) == "started"
    # The check went through once the database was back: the key's fingerprint is on record.
    recorded = await query(settings.database_url_value(), "SELECT version FROM meeting_keys")
    assert recorded == [{"version": settings.meeting_key_version}]
