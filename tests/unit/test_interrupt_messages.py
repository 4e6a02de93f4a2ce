"""Ctrl-C in an operator command that changes things says what state it left and how to go on (README,
Operations): `dlq replay` (chunks of 500: the acknowledged ones are done, the one in hand rolled back), `outbox
republish` (rows handed back at once or not at all), `inbox prune` / `outbox prune` and `meeting rekey` (batch by
batch); a dry run, which changes nothing, says only that it was interrupted."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from booking_sessions.cli import app
from booking_sessions.ops.failures import OperatorError, changes_begin


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


@pytest.mark.usefixtures("servers")
@pytest.mark.parametrize(
    ("patched", "command", "said"),
    [
        (
            "booking_sessions.ops.republish.republish",
            ["outbox", "republish", "--all"],
            "interrupted; the rows chosen were handed back to the relay at once or not at all: the running service's "
            "relay sends them if they were, else run the same command again",
        ),
        (
            "booking_sessions.ops.prune.prune",
            ["inbox", "prune", "--older-than", "90d"],
            "interrupted; the batches deleted so far stay deleted: run the same command again to go on",
        ),
        (
            "booking_sessions.ops.prune.prune",
            ["outbox", "prune", "--older-than", "90d"],
            "interrupted; the batches deleted so far stay deleted: run the same command again to go on",
        ),
        (
            "booking_sessions.ops.rekey.rekey",
            ["meeting", "rekey", "--all"],
            "interrupted; the batches re-keyed so far stay so, with their SessionUpdated: run the same command "
            "again for the rest (sessions already under the key are skipped)",
        ),
    ],
)
def test_each_command_that_changes_rows_says_what_ctrl_c_left(
    monkeypatch: pytest.MonkeyPatch, patched: str, command: list[str], said: str
) -> None:
    monkeypatch.setattr(patched, interrupted)
    result = CliRunner().invoke(app, command, terminal_width=400)
    assert result.exit_code == 130, result.output
    assert " ".join(result.output.split()) == said
    dry = CliRunner().invoke(app, [*command, "--dry-run"], terminal_width=400)
    assert dry.exit_code == 130 and dry.output.strip() == "interrupted", dry.output


def silent_broker(*_: Any, **__: Any) -> Any:
    changes_begin()  # half-way: the first chunk, batch or offset commit went
    raise OperatorError("the Kafka broker did not acknowledge 500 record(s) within 20 s")


def refused_before_any_change(*_: Any, **__: Any) -> Any:
    raise OperatorError("cannot reach the Kafka broker at 127.0.0.1:1")


@pytest.mark.usefixtures("servers")
@pytest.mark.parametrize(
    ("patched", "command", "after"),
    [
        (
            "booking_sessions.ops.dlq_replay.replay_dead_letters",
            ["dlq", "replay", "--reason", "processing_error"],
            "; chunks already acknowledged are done, the chunk in hand was rolled back",
        ),
        (
            "booking_sessions.ops.replay.replay_topic",
            ["replay", "--group", "rebuild-1"],
            "; to resume, run the same command with --group rebuild-1",
        ),
        (
            "booking_sessions.ops.prune.prune",
            ["inbox", "prune", "--older-than", "90d"],
            "; the batches deleted so far stay deleted: run the same command again to go on",
        ),
    ],
)
def test_a_server_that_stops_answering_half_way_says_what_a_ctrl_c_would(
    monkeypatch: pytest.MonkeyPatch, patched: str, command: list[str], after: str
) -> None:
    """Found by trying: a silent broker ended `dlq replay` with its error alone, while chunks were done already."""
    monkeypatch.setattr(patched, silent_broker)
    result = CliRunner().invoke(app, command, terminal_width=400)
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert said.startswith(f"error: the Kafka broker did not acknowledge 500 record(s) within 20 s{after}"), said
    dry = CliRunner().invoke(app, [*command, "--dry-run"], terminal_width=400)
    assert dry.exit_code == 2
    assert " ".join(dry.output.split()) == "error: the Kafka broker did not acknowledge 500 record(s) within 20 s"
    # Before any change (a newcomer's find: every error line had the tail, "to resume" where nothing had begun).
    monkeypatch.setattr(patched, refused_before_any_change)
    early = CliRunner().invoke(app, command, terminal_width=400)
    assert early.exit_code == 2
    assert " ".join(early.output.split()) == "error: cannot reach the Kafka broker at 127.0.0.1:1"


@pytest.mark.usefixtures("servers")
def test_a_booking_file_saved_with_a_byte_order_mark_keeps_its_first_booking(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Found by trying: a file from a Windows editor began with U+FEFF, and its first booking was never re-keyed."""
    asked: list[Any] = []

    def rekey(_settings: Any, request: Any, _progress: Any) -> Any:
        asked.append(request)
        raise KeyboardInterrupt

    monkeypatch.setattr("booking_sessions.ops.rekey.rekey", rekey)
    listed = tmp_path / "leaked.txt"
    listed.write_bytes("\ufeffbk_1\r\nbk_2 # second\r\n".encode())
    result = CliRunner().invoke(app, ["meeting", "rekey", "--booking-file", str(listed)], terminal_width=400)
    assert result.exit_code == 130, result.output
    assert [r.bookings for r in asked] == [("bk_1", "bk_2")]
