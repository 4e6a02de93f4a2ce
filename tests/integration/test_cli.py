"""The command as operators use it: migrate, run (until SIGTERM), demo, and its errors."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from typer.testing import CliRunner

from booking_sessions.cli import app
from booking_sessions.migrate import alembic_config
from booking_sessions.settings import Settings
from tests.conftest import _admin_execute, _drop_database
from tests.integration.bookings import event
from tests.integration.harness import (
    Produced,
    committed_offsets,
    env_for,
    execute,
    publish,
    query,
    running_process,
)
from tests.servers.ladder import PostgresHandle
from tests.waiting import eventually

REPO = Path(__file__).resolve().parents[2]
CONTRACT_TABLES = {"inbox_messages", "live_sessions", "session_participants", "session_reservations", "outbox_messages"}


async def test_migrate_creates_the_contract_tables_and_is_idempotent(postgres: PostgresHandle) -> None:
    empty = "t_migrate_" + os.urandom(4).hex()
    await query(postgres.url, "SELECT 1")  # server up
    await _admin_execute(postgres, f'CREATE DATABASE "{empty}"')
    try:
        url = postgres.url_for(empty)
        env = {"BOOKING_DATABASE_URL": url}
        runner = CliRunner()
        for _ in range(2):
            result = await asyncio.to_thread(runner.invoke, app, ["migrate"], env=env)
            assert result.exit_code == 0, result.output
        rows = await query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        assert {r["tablename"] for r in rows} >= CONTRACT_TABLES
        [version] = await query(url, "SELECT version_num FROM alembic_version")
        # The newest revision, whichever it is: each migration that lands moves it.
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        assert head is not None and version == {"version_num": head}
        assert "meeting_keys" in {r["tablename"] for r in rows}
        # Migrated by a newer release (an image rolled back, whose `migrate` job runs too): left as it is, exit 0.
        # Before: Alembic's "Can't locate revision" in a 117-line traceback, exit code 1 (a newcomer's find).
        await execute(url, "UPDATE alembic_version SET version_num = '9999'")
        newer = await asyncio.to_thread(runner.invoke, app, ["migrate"], env=env)
        assert newer.exit_code == 0, newer.output
        assert f"the schema is at revision 9999, newer than this release's newest ({head})" in newer.output
        assert "Traceback" not in newer.output
        # Another application's revision (a shared database) is no newer schema of ours: refused, exit 2.
        await execute(url, "UPDATE alembic_version SET version_num = 'a1b2c3d4e5f6'")
        foreign = await asyncio.to_thread(runner.invoke, app, ["migrate"], env=env)
        assert foreign.exit_code == 2, foreign.output
        assert "revision 'a1b2c3d4e5f6', which is no migration of booking-sessions" in foreign.output
    finally:
        await _admin_execute(postgres, _drop_database(empty))


def test_half_configured_run_is_refused_with_one_readable_line() -> None:
    result = CliRunner().invoke(app, ["run"], env={"BOOKING_KAFKA_BOOTSTRAP": "127.0.0.1:9"})
    assert result.exit_code == 2
    assert "BOOKING_DATABASE_URL is not set" in result.output
    assert "Traceback" not in result.output


def test_run_without_meeting_secret_is_refused(settings: Settings) -> None:
    env = env_for(settings)
    del env["BOOKING_MEETING_SECRET"]
    done = subprocess.run(
        [sys.executable, "-m", "booking_sessions.cli", "run"], env=env, cwd=REPO, capture_output=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert b"BOOKING_MEETING_SECRET is required" in done.stderr
    assert b"Traceback" not in done.stderr


def test_invalid_setting_is_refused() -> None:
    result = CliRunner().invoke(app, ["migrate"], env={"BOOKING_METRICS_PORT": "seventy"})
    assert result.exit_code == 2
    assert "BOOKING_METRICS_PORT" in result.output


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
async def test_run_consumes_until_sigterm_then_exits_zero_with_offsets_committed(
    stop: signal.Signals, settings: Settings, database_url: str
) -> None:
    # SIGHUP (a terminal or ssh session closing) as SIGTERM: before, it killed the process at once, exit code 129.
    produced = Produced()
    await publish(settings, [event("BookingApproved", f"bk_{i}", 0) for i in range(30)], produced)
    async with running_process(settings) as process:

        async def applied() -> bool:
            [row] = await query(
                database_url, "SELECT count(*) AS n FROM outbox_messages WHERE published_at IS NOT NULL"
            )
            assert row["n"] == 30, f"{row['n']} of 30 published"
            return True

        await eventually(applied, what="the service to apply and publish 30 bookings", timeout_s=60)
        process.send_signal(stop)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert stop.name.encode() in stderr
    assert settings.meeting_secret is not None
    assert settings.meeting_secret.get_secret_value().encode() not in stderr  # the secret never reaches the logs
    # Offsets were committed: a consumer of the same group has nothing left to read.
    committed = await committed_offsets(settings, list(produced.ends))
    assert committed == produced.ends


def test_demo_on_configured_servers_passes(settings: Settings) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "booking_sessions.cli", "demo"],
        env=env_for(settings),
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, (done.stdout + done.stderr).decode()[-3000:]
    assert b"demo passed" in done.stdout
    assert b"FAIL" not in done.stdout
