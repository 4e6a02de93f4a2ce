"""Ctrl-C in an operator command that changes things says what state it left and how to go on (README,
Operations): `dlq replay` (chunks of 500: the acknowledged ones are done, the one in hand rolled back)."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from booking_sessions.cli import app


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKING_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("BOOKING_DATABASE_URL", "postgresql+asyncpg://u@127.0.0.1:1/db")


def interrupted(*_: Any, **__: Any) -> Any:
    raise KeyboardInterrupt


@pytest.mark.usefixtures("servers")
def test_dlq_replay_interrupted_says_what_is_done_and_to_run_it_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("booking_sessions.ops.dlq_replay.replay_dead_letters", interrupted)
    result = CliRunner().invoke(app, ["dlq", "replay", "--reason", "processing_error"], terminal_width=400)
    assert result.exit_code == 130, result.output
    said = " ".join(result.output.split())
    assert said.startswith("interrupted; chunks already acknowledged are done, the chunk in hand was rolled back")
    assert said.endswith("run the same command again to replay the rest")


@pytest.mark.usefixtures("servers")
def test_dlq_replay_dry_run_interrupted_says_only_that(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("booking_sessions.ops.dlq_replay.replay_dead_letters", interrupted)
    result = CliRunner().invoke(app, ["dlq", "replay", "--all", "--dry-run"], terminal_width=400)
    assert result.exit_code == 130, result.output
    assert result.output.strip() == "interrupted"
