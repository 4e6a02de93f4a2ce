"""Nonsense an operator can type or set is refused with one line on stderr and exit code 2, before any change or
connection: huge durations, edge timestamps, full-width digits, malformed ports, unknown log levels, integers
beyond any sane bound (README, "Operations"). No server is needed: each is refused before one is asked."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from booking_sessions.ops.arguments import (
    MAX_DURATION,
    ArgumentError,
    parse_duration,
    parse_moment,
    parse_offsets,
    parse_positions,
)
from booking_sessions.ops.terminal import unknown_variables
from booking_sessions.settings import Settings

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("99999999999d", "at most 36500d"),
        ("1000000d", "at most 36500d"),
        ("9" * 5000 + "d", "at most 36500d"),
        ("\uff13\uff10d", "is not a duration"),  # full-width 30d: not 30 days
        ("0d", "longer than zero"),
    ],
)
def test_a_duration_beyond_a_century_or_not_ascii_is_refused(text: str, says: str) -> None:
    with pytest.raises(ArgumentError, match=says):
        parse_duration(text)


def test_durations_up_to_a_century_are_read() -> None:
    assert parse_duration("36500d") == MAX_DURATION
    assert parse_duration("1d12h") == timedelta(hours=36)


@pytest.mark.parametrize(
    "text", ["1000000d", "9999-12-31T23:59-12:00", "0001-01-01T00:00+14:00", "1969-12-31", "\uff12026-11-01"]
)
def test_a_time_outside_what_kafka_and_datetime_hold_is_refused(text: str) -> None:
    with pytest.raises(ArgumentError):
        parse_moment(text, NOW)


def test_times_at_the_bounds_are_read() -> None:
    assert parse_moment("9999-12-31", NOW) == datetime(9999, 12, 31, tzinfo=UTC)
    assert parse_moment("1970-01-01T00:00Z", NOW) == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_moment("20000d", NOW) == NOW - timedelta(days=20000)


@pytest.mark.parametrize("text", ["0:99999999999999999999", "3000000000:1", "\uff10:1"])
def test_partitions_and_offsets_beyond_kafkas_integers_are_refused(text: str) -> None:
    with pytest.raises(ArgumentError):
        parse_offsets(text)
    with pytest.raises(ArgumentError):
        parse_positions([text])


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("BOOKING_KAFKA_BOOTSTRAP", "127.0.0.1:abc", "is not host:port"),
        ("BOOKING_KAFKA_BOOTSTRAP", "127.0.0.1:99999", "1 to 65535"),
        ("BOOKING_KAFKA_BOOTSTRAP", "127.0.0.1:0", "1 to 65535"),
        ("BOOKING_KAFKA_BOOTSTRAP", "a:1,,b:2", "is not host:port"),
        ("BOOKING_DATABASE_URL", "postgresql+asyncpg://u:sekret@127.0.0.1:99999/db", "1 to 65535"),
        ("BOOKING_DATABASE_URL", "postgresql+asyncpg://u:sekret@127.0.0.1:abc/db", "is not a URL"),
        # A newcomer's finds: each ended every command in a traceback (or, for the "@", showed the password's tail).
        ("BOOKING_DATABASE_URL", "postgresql+asyncpg://u:sekret@x@127.0.0.1:5432/db", "percent-encode it as %40"),
        (
            "BOOKING_DATABASE_URL",
            "postgresql+asyncpg://u:sekret@h:5432/db?sslmode=require",
            "BOOKING_DATABASE_SSL_MODE",
        ),
        (
            "BOOKING_DATABASE_URL",
            "postgresql+asyncpg://u:sekret@h:5432/db?application_name=x",
            "application_name= is not read",
        ),
        ("BOOKING_DATABASE_URL", "postgresql+asyncpg://u:sekret@h:5432/db?ssl=bogus", "must be one of allow"),
        ("BOOKING_DATABASE_URL", "postgresql+asyncpg://u:sekret@h:5432/db?ssl=require&ssl=disable", "given 2 times"),
        ("BOOKING_DATABASE_URL", "postgresql+asyncpg://u:sekret@h:5432/db\n", "a trailing newline"),
        ("BOOKING_MEETING_BASE_URL", "meet.jit.si", "http:// or https://"),
        ("BOOKING_LOG_LEVEL", "LOUD", "one of DEBUG, INFO"),
        ("BOOKING_INBOX_RETENTION", "99999999999d", "at most 36500d"),
        ("BOOKING_OUTBOX_RETENTION", "1000000d", "at most 36500d"),
        ("BOOKING_SHUTDOWN_TIMEOUT_S", "1e300", "less than or equal"),
        ("BOOKING_RETENTION_INTERVAL_S", "inf", "finite number"),
        ("BOOKING_SHUTDOWN_TIMEOUT_S", "nan", "finite number"),
        ("BOOKING_RETENTION_BATCH_ROWS", "99999999999999999999", "less than or equal"),
        ("BOOKING_MAX_MESSAGE_BYTES", "99999999999999999999", "less than or equal"),
        ("BOOKING_INPUT_TOPIC", "booking events", "Kafka topic name"),
        ("BOOKING_DLQ_TOPIC", "booking.events", "three different topics"),
        ("BOOKING_GROUP_ID", "", "at least 1 character"),
    ],
)
def test_a_setting_that_cannot_work_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=says) as refused:
        Settings()
    assert "sekret" not in str(refused.value)  # the URL's password is never quoted


@pytest.mark.parametrize("variable", ["BOOKING_KAFKA_BOOTSTRAP", "BOOKING_DATABASE_URL", "BOOKING_LOG_LEVEL"])
def test_an_empty_setting_counts_as_unset(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "")
    settings = Settings()
    assert getattr(settings, variable.removeprefix("BOOKING_").lower()) is None
    monkeypatch.setenv("BOOKING_MEETING_BASE_URL", " ")
    assert Settings().meeting_base_url == "https://meet.jit.si"


def test_good_settings_still_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKING_KAFKA_BOOTSTRAP", "kafka-1:9092, [::1]:9093")
    monkeypatch.setenv("BOOKING_DATABASE_URL", "postgresql+asyncpg://u:sek%40ret@[::1]:5432/db?ssl=require")
    monkeypatch.setenv("BOOKING_LOG_LEVEL", "debug")
    settings = Settings()
    assert (settings.kafka_bootstrap, settings.log_level) == ("kafka-1:9092,[::1]:9093", "DEBUG")


def booking_sessions(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The console script with only these BOOKING_* variables set (the others of this environment unset)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BOOKING_")}
    return subprocess.run(
        [sys.executable, "-m", "booking_sessions.cli", *args],
        env=clean | env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_refused(done: subprocess.CompletedProcess[str], says: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], done.stderr
    assert "Traceback" not in done.stderr


# Nothing listens on port 1: had an argument got through, the command would say "cannot reach", not this.
SERVERS = {
    "BOOKING_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    "BOOKING_DATABASE_URL": "postgresql+asyncpg://u:sekret@127.0.0.1:1/db",
}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["inbox", "prune", "--older-than", "99999999999d"], "at most 36500d"),
        (["inbox", "prune", "--older-than", "1000000d"], "at most 36500d"),
        (["outbox", "prune", "--older-than", "\uff13\uff10d"], "is not a duration"),
        (["replay", "--since", "1000000d"], "at most 36500d"),
        (["replay", "--since", "9999-12-31T23:59-12:00"], "out of range"),
        (["dlq", "list", "--since", "1000000d"], "at most 36500d"),
        (["dlq", "list", "--since", "9999-12-31T23:59-12:00"], "out of range"),
        (["dlq", "replay", "--offset", "0:99999999999999999999"], "an offset at most"),
        (["outbox", "republish", "--since", "1000000d"], "at most 36500d"),
        (["inbox", "prune", "--older-than", "30d", "--batch-rows", "99999999999999999999"], "--batch-rows"),
        (["meeting", "rekey", "--all", "--batch-rows", "99999999999999999999"], "--batch-rows"),
        (["dlq", "list", "--limit", "99999999999999999999"], "--limit"),
        (["meeting", "rekey", "--booking-file", "/dev/zero"], "larger than"),
        (["meeting", "rekey", "--booking", ""], "not a booking id"),
        (["outbox", "republish", "--all", "--booking", "bk_1"], "choose one of --all and the filters"),
        (["outbox", "republish", "--booking", "bk_1", "--booking", "\ufeffbk_2"], "not a booking id"),
        (["dlq", "replay", "--all", "--offset", "0:1"], "choose one of --all and the filters"),
        (["meeting", "rekey", "--booking", "bk 1"], "not a booking id (1 to 64 of A-Z a-z 0-9 _ . : -): 'bk 1'"),
    ],
)
def test_every_command_refuses_an_argument_out_of_bounds(args: list[str], says: str) -> None:
    assert_refused(booking_sessions(*args, **SERVERS), says)


@pytest.mark.parametrize("command", [["status"], ["run"], ["migrate"], ["inbox", "prune", "--older-than", "30d"]])
@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("BOOKING_KAFKA_BOOTSTRAP", "127.0.0.1:abc", "BOOKING_KAFKA_BOOTSTRAP"),
        ("BOOKING_DATABASE_URL", "postgresql+asyncpg://u:sekret@127.0.0.1:99999/postgres", "1 to 65535"),
        ("BOOKING_INBOX_RETENTION", "99999999999d", "BOOKING_INBOX_RETENTION"),
        ("BOOKING_INBOX_RETENTION", "1000000d", "BOOKING_INBOX_RETENTION"),
        ("BOOKING_LOG_LEVEL", "LOUD", "BOOKING_LOG_LEVEL"),
    ],
)
def test_every_command_refuses_a_setting_at_start(command: list[str], variable: str, value: str, says: str) -> None:
    done = booking_sessions(*command, **(SERVERS | {variable: value, "BOOKING_METRICS_PORT": "0"}))
    assert_refused(done, says)
    assert "sekret" not in done.stderr


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers: a frozen server (SIGSTOP) as a client sees it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("command", [["migrate"], ["inbox", "prune", "--older-than", "30d"]])
def test_a_silent_database_is_named_with_the_seconds_really_waited(silent_server: int, command: list[str]) -> None:
    url = f"postgresql+asyncpg://u:sekret@127.0.0.1:{silent_server}/db"
    started = time.monotonic()
    done = booking_sessions(*command, BOOKING_DATABASE_URL=url, BOOKING_DATABASE_CONNECT_TIMEOUT_S="2")
    waited = time.monotonic() - started
    where = f"postgresql+asyncpg://u:***@127.0.0.1:{silent_server}/db"
    assert_refused(done, f"cannot reach the database at {where}: no answer within 2 s")
    assert waited < 15, f"gave up after {waited:.0f} s"


def test_run_refuses_a_taken_metrics_port_before_starting_anything() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = booking_sessions("run", BOOKING_METRICS_PORT=str(port))  # nothing configured: embedded servers
        waited = time.monotonic() - started
    assert_refused(done, f"cannot serve /metrics on 127.0.0.1:{port}")
    assert "embedded" not in done.stdout + done.stderr and waited < 10


def test_sigterm_during_a_command_ends_it_as_ctrl_c_does_with_a_line_and_exit_143() -> None:
    """Found by trying: SIGTERM (a job stopped, ``kill``) killed an operator's command at once, rc -15, silently."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(30)
        url = f"postgresql+asyncpg://u@127.0.0.1:{listener.getsockname()[1]}/db"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("BOOKING_")}
        env = clean | {"BOOKING_DATABASE_URL": url, "BOOKING_DATABASE_CONNECT_TIMEOUT_S": "60"}
        command = [sys.executable, "-m", "booking_sessions.cli", "inbox", "prune", "--older-than", "30d"]
        with subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True) as process:
            connection, _ = listener.accept()  # the command is waiting on its database now
            with connection:
                process.send_signal(signal.SIGTERM)
                _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, stderr
    said = " ".join(stderr.split())
    assert said.endswith("terminated; the batches deleted so far stay deleted: run the same command again to go on")
    assert "Traceback" not in stderr


def test_a_booking_variable_that_is_no_setting_is_warned_about_with_the_likely_one() -> None:
    # A newcomer's find: BOOKING_INBOX_RETENTON=1h ran with the 30-day default and not a word.
    environment = {
        "BOOKING_INBOX_RETENTON": "1h",
        "BOOKING_SERVICE_URL": "http://x",  # another program's: warned about, not refused
        "BOOKING_INBOX_RETENTION": "30d",
        "BOOKING_TEST_KAFKA": "apache",
        "PATH": "/bin",
    }
    assert unknown_variables(environment) == [
        "BOOKING_INBOX_RETENTON is not a setting of booking-sessions and is ignored "
        "(did you mean BOOKING_INBOX_RETENTION?)",
        "BOOKING_SERVICE_URL is not a setting of booking-sessions and is ignored",
    ]
