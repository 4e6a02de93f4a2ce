"""Every command that consumes or produces checks its topics exist first, without creating them: on a broker that
auto-creates topics (Kafka's default, and the test broker's), a typo would otherwise become a one-partition topic
that `run` waits on forever. Also: `dlq replay --offset` of a position the DLQ does not have is refused."""

from __future__ import annotations

import asyncio
import sys
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from booking_sessions.settings import Settings
from tests.integration.harness import REPO, env_for
from tests.integration.operator_cli import assert_one_line_error, invoke


async def topic_names(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


@pytest.mark.parametrize("setting", ["BOOKING_INPUT_TOPIC", "BOOKING_OUTPUT_TOPIC", "BOOKING_DLQ_TOPIC"])
async def test_run_refuses_a_missing_topic_and_never_creates_it(settings: Settings, setting: str) -> None:
    typo = f"booking.evnets.{uuid.uuid4().hex[:8]}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "booking_sessions.cli", "run",
        env=env_for(settings) | {setting: typo}, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    lines = stderr.decode().strip().splitlines()
    assert process.returncode == 2, stderr.decode()
    assert lines[-1] == (
        f"error: topic {typo!r} does not exist on {settings.kafka_bootstrap} (check {setting}); "
        "create it first (README, Running it)"
    ), stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert "service_started" not in stderr.decode()  # refused before the service opened
    assert settings.kafka_bootstrap is not None
    assert typo not in await topic_names(settings.kafka_bootstrap)


async def test_replay_checks_the_topics_it_writes(settings: Settings) -> None:
    missing = f"no.such.topic.{uuid.uuid4().hex[:6]}"
    assert_one_line_error(
        await invoke(settings, "replay", "--dry-run", BOOKING_DLQ_TOPIC=missing),
        f"topic {missing!r} does not exist",
        "BOOKING_DLQ_TOPIC",
    )
    assert_one_line_error(
        await invoke(settings, "replay", "--relay", BOOKING_OUTPUT_TOPIC=missing),
        f"topic {missing!r} does not exist",
        "BOOKING_OUTPUT_TOPIC",
    )
    assert_one_line_error(
        await invoke(settings, "outbox", "republish", "--all", "--relay", BOOKING_OUTPUT_TOPIC=missing),
        "BOOKING_OUTPUT_TOPIC",
    )
    assert_one_line_error(
        await invoke(settings, "dlq", "replay", "--all", BOOKING_INPUT_TOPIC=missing), "BOOKING_INPUT_TOPIC"
    )
    assert settings.kafka_bootstrap is not None
    assert missing not in await topic_names(settings.kafka_bootstrap)


async def test_dlq_replay_of_a_position_the_dlq_does_not_have_is_refused(settings: Settings) -> None:
    for dry_run in (["--dry-run"], []):
        assert_one_line_error(
            await invoke(settings, "dlq", "replay", "--offset", "0:999", *dry_run),
            f"--offset 0:999: no such dead letter in {settings.dlq_topic}",
        )
    assert_one_line_error(
        await invoke(settings, "dlq", "replay", "--offset", "0:999", "--reason", "invalid"),
        "or none that matches --reason/--since/--until",
    )
