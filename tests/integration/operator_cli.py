"""Run the operators' commands as an operator would (the real `booking-sessions` app), against the test's servers."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from typing import Any

from typer.testing import CliRunner, Result

from booking_sessions.cli import app
from booking_sessions.settings import Settings
from models.events import BookingEvent
from models.records import OutgoingRecord
from producer.bookings import as_record
from producer.publish import Publisher
from tests.integration.harness import Produced, booking_env


def operator_env(settings: Settings, **overrides: str | None) -> dict[str, str | None]:
    """The service's configuration as environment variables (None: unset); other BOOKING_* from outside are unset."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("BOOKING_") and "_TEST_" not in k}
    env.update(booking_env(settings))
    env.update(overrides)
    return env


async def invoke(settings: Settings, *args: str, **env: str | None) -> Result:
    """``booking-sessions <args>`` in a thread (the command runs its own event loop), output captured."""
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, app, list(args), env=operator_env(settings, **env))


async def invoke_json(settings: Settings, *args: str, **env: str | None) -> Any:
    result = await invoke(settings, *args, "--json", **env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """Exit code 2, one readable error line last on stderr (after any warning the clients logged), no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert "Traceback" not in result.output


async def publish_one_by_one(
    settings: Settings, items: Sequence[BookingEvent | OutgoingRecord], produced: Produced | None = None
) -> None:
    """One record per produce request. Apache Kafka does not care; Tansu reports a topic's end offset as the last
    batch's base offset + 1, which is right only for batches of one record."""
    assert settings.kafka_bootstrap is not None
    publisher = await Publisher.start(settings.kafka_bootstrap, client_id="test-upstream")
    try:
        for item in items:
            record = item if isinstance(item, OutgoingRecord) else as_record(item, settings.input_topic)
            [metadata] = await publisher.send_all([record])
            if produced is not None:
                produced.add(metadata.topic, metadata.partition, metadata.offset)
    finally:
        await publisher.stop()
