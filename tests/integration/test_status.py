"""`booking-sessions status`, and how every operator command fails: wrong topic, unreachable broker or database,
missing configuration: exit code 2 and one readable line."""

from __future__ import annotations

import subprocess
import sys
import uuid

from booking_sessions.settings import Settings
from tests.conftest import _admin_execute, _drop_database
from tests.integration.bookings import event
from tests.integration.dead_letters import invalid_record
from tests.integration.harness import REPO, Produced, consume_all, service
from tests.integration.operator_cli import assert_one_line_error, invoke, invoke_json, operator_env, publish_one_by_one
from tests.servers.ladder import PostgresHandle

UNREACHABLE_DATABASE = "postgresql+asyncpg://booking:secret-pw@127.0.0.1:1/booking"


async def test_status_reports_lag_outbox_backlog_dead_letters_and_inbox(settings: Settings, database_url: str) -> None:
    consumed = Produced()
    await publish_one_by_one(
        settings,
        [
            *(event("BookingApproved", f"bk_{i}", 0) for i in range(5)),
            invalid_record(settings.input_topic),
            event("BookingCancelled", "bk_gone", 0),  # cancelled before it was approved: a row, nothing to send
        ],
        consumed,
    )
    async with service(settings) as svc:  # consumes, but its relay does not run: five rows wait in the outbox
        await consume_all(svc, consumed)
    waiting = Produced()
    await publish_one_by_one(settings, [event("BookingApproved", f"bk_new_{i}", 0) for i in range(3)], waiting)

    found = await invoke_json(settings, "status")

    committed = {p["partition"]: p["committed"] for p in found["partitions"] if p["committed"] is not None}
    assert committed == {p: end for (_, p), end in consumed.ends.items()}
    assert found["lag"] == 3 and sum(p["lag"] for p in found["partitions"]) == 3
    assert sum(p["end"] for p in found["partitions"]) == 10
    assert (found["outbox_backlog"], found["dlq_size"], found["inbox_size"]) == (5, 1, 7)
    assert found["outbox_oldest_age_s"] >= 0
    assert found["inbox_by_outcome"] == {"applied": 6, "dead_lettered": 1}
    assert found["sessions_by_status"] == {"SCHEDULED": 5, "CANCELLED": 1}
    assert found["group_id"] == settings.group_id

    text = await invoke(settings, "status")
    assert text.exit_code == 0, text.output
    assert f"{settings.input_topic} as group {settings.group_id}" in text.stdout
    assert "outbox backlog: 5 rows, oldest" in text.stdout
    assert f"dead letters: 1 in {settings.dlq_topic}" in text.stdout
    assert "inbox: 7 rows (applied 6, dead_lettered 1)" in text.stdout
    assert "live sessions: 6 (CANCELLED 1, SCHEDULED 5)" in text.stdout


async def test_wrong_topic_unreachable_servers_and_missing_settings_end_in_one_line(settings: Settings) -> None:
    missing = f"no.such.topic.{uuid.uuid4().hex[:6]}"
    assert_one_line_error(
        await invoke(settings, "status", BOOKING_INPUT_TOPIC=missing),
        f"topic {missing!r} does not exist",
        "BOOKING_INPUT_TOPIC",
    )
    assert_one_line_error(
        await invoke(settings, "dlq", "list", BOOKING_DLQ_TOPIC=missing), "does not exist", "BOOKING_DLQ_TOPIC"
    )
    assert_one_line_error(
        await invoke(settings, "replay", BOOKING_KAFKA_BOOTSTRAP="127.0.0.1:1"),
        "cannot reach the Kafka broker at 127.0.0.1:1",
    )
    for command in (["status"], ["replay", "--dry-run"], ["inbox", "prune", "--older-than", "30d"]):
        result = await invoke(settings, *command, BOOKING_DATABASE_URL=UNREACHABLE_DATABASE)
        assert_one_line_error(result, "cannot use the database at postgresql+asyncpg://booking:***@127.0.0.1:1")
        assert "secret-pw" not in result.output
    assert_one_line_error(
        await invoke(settings, "replay", BOOKING_MEETING_SECRET=None), "BOOKING_MEETING_SECRET is required"
    )
    assert_one_line_error(
        await invoke(settings, "dlq", "list", BOOKING_KAFKA_BOOTSTRAP=None), "BOOKING_KAFKA_BOOTSTRAP"
    )


async def test_a_database_without_the_schema_says_to_migrate(settings: Settings, postgres: PostgresHandle) -> None:
    name = f"t_empty_{uuid.uuid4().hex[:8]}"
    await _admin_execute(postgres, f'CREATE DATABASE "{name}"')
    try:
        result = await invoke(
            settings, "inbox", "prune", "--older-than", "30d", BOOKING_DATABASE_URL=postgres.url_for(name)
        )
        assert_one_line_error(result, "has no schema yet: run `booking-sessions migrate`")
    finally:
        await _admin_execute(postgres, _drop_database(name))


def test_the_real_command_exits_2_with_one_line_on_stderr(settings: Settings) -> None:
    env = {k: v for k, v in operator_env(settings, BOOKING_DATABASE_URL=UNREACHABLE_DATABASE).items() if v is not None}
    done = subprocess.run(
        [sys.executable, "-m", "booking_sessions.cli", "status"], env=env, cwd=REPO, capture_output=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.decode().strip().splitlines() == [
        "error: cannot use the database at postgresql+asyncpg://booking:***@127.0.0.1:1/booking: connection failed: "
        "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 1)"
    ]
    assert done.stdout == b""
