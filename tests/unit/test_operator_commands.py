"""The operators' commands without servers: their help, and bad arguments refused before any connection."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from booking_sessions.cli import app

COMMANDS = [["replay"], ["status"], ["outbox", "republish"], ["dlq", "list"], ["dlq", "replay"], ["inbox", "prune"]]
# Unreachable on purpose: every case below must fail before connecting to anything.
ENV = {
    "BOOKING_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    "BOOKING_DATABASE_URL": "postgresql+asyncpg://u:pw@127.0.0.1:1/db",
    "BOOKING_MEETING_SECRET": "unit-test-secret-of-at-least-32-bytes",
    "BOOKING_GROUP_ID": "booking-sessions",
}


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_explains_the_command_with_examples(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output and f"booking-sessions {' '.join(command)}" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "--since", "yesterday"], "'yesterday' is not a time"),
        (["replay", "--since", "2h", "--until", "3h"], "must be later than --since"),
        (["replay", "--since", "2h", "--offsets", "0:1"], "choose one of --since and --offsets"),
        (["replay", "--offsets", "zero"], "is not partition:offset"),
        (["replay", "--group", "booking-sessions"], "refusing to replay as the live group"),
        (["outbox", "republish"], "choose rows"),
        (["outbox", "republish", "--type", "SessionDeleted"], "--type SessionDeleted: unknown"),
        (["dlq", "replay"], "choose dead letters"),
        (["dlq", "replay", "--offset", "x"], "not a DLQ position"),
        (["dlq", "list", "--reason", "poison"], "--reason poison: unknown"),
        (["inbox", "prune", "--older-than", "30"], "not a duration"),
        (["inbox", "prune", "--older-than", "10m"], "at least 1h"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_missing_configuration_is_named() -> None:
    result = CliRunner().invoke(app, ["status"], env={"BOOKING_KAFKA_BOOTSTRAP": None, "BOOKING_DATABASE_URL": None})
    assert result.exit_code == 2
    assert "BOOKING_KAFKA_BOOTSTRAP is not set" in result.stderr
