"""`run` started while PostgreSQL is away waits for it (no crash loop), then starts: the meeting-key check at start
retries a database that is away; a key that does not fit is still refused at once (test_meeting_rekey.py)."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest
from structlog.testing import capture_logs

from booking_sessions.dev.postgres import PostgresCluster
from booking_sessions.service import open_service
from booking_sessions.settings import Settings
from tests.conftest import _admin_execute
from tests.integration.harness import query, running_process, sigterm
from tests.integration.http_probes import get, scrape, value
from tests.servers.ladder import PostgresHandle
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_run_on_an_unmigrated_database_says_to_migrate_serves_its_probes_and_a_sigterm_ends_its_wait(
    postgres: PostgresHandle, settings: Settings
) -> None:
    # Waited for (a deploy may run `migrate` beside it), but before the fix its log never said what was missing,
    # and SIGTERM ended the wait only at the shutdown deadline (30 s), with exit code 1. And its HTTP endpoints were
    # served only once it started, so a liveness probe restarted it while it waited: a crash loop.
    name, port = f"t_{uuid.uuid4().hex}", free_port()
    await _admin_execute(postgres, f'CREATE DATABASE "{name}"')
    try:
        env = {"BOOKING_DATABASE_URL": postgres.url_for(name), "BOOKING_METRICS_PORT": str(port)}
        async with running_process(settings, **env) as process:
            stderr = process.stderr
            assert stderr is not None
            said = b""

            async def hinted() -> bool:
                nonlocal said
                said += await asyncio.wait_for(stderr.readline(), timeout=30)
                return b"meeting_key_check_retry" in said and b"run `booking-sessions migrate`" in said

            await eventually(hinted, what="a retry that says to migrate", timeout_s=60, interval_s=0)
            base = f"http://127.0.0.1:{port}"
            assert await get(f"{base}/healthz") == (200, b'{"status": "starting"}')  # alive: not to be restarted
            assert await get(f"{base}/readyz") == (503, b'{"status": "starting"}')
            # And the wait counts as retries, so that an instance waiting for ever pages (BookingSessionsRetrying).
            samples = await scrape(base)
            assert value(samples, "booking_sessions_retries_total", component="startup", cause="database") >= 1
            said += await sigterm(process, timeout_s=10)  # well inside the 30 s shutdown deadline
            assert process.returncode == 0, said.decode(errors="replace")[-2000:]
            assert b"startup_abandoned" in said
    finally:
        await _admin_execute(postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
