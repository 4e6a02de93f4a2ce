"""Logs: JSON lines with the fields that find a message, one format for structlog and the standard library,
and no secret anywhere (messages, errors, tracebacks, --help)."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from uuid import UUID

import pytest
import structlog
import typer
from pydantic import SecretStr
from typer.testing import CliRunner

from booking_sessions import logs
from booking_sessions.cli import app
from booking_sessions.settings import Settings
from consumer.deadletter import log_dead_letters
from consumer.decode import decode
from models.records import Record

DB_PASSWORD = "db-password-sentinel"
SASL_PASSWORD = "sasl-password-sentinel"
MEETING_SECRET = "meeting-secret-sentinel-of-32-bytes-or-more"
SECRETS = (DB_PASSWORD, SASL_PASSWORD, MEETING_SECRET)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    excepthooks = sys.excepthook, threading.excepthook
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)
    logs._secrets.clear()
    sys.excepthook, threading.excepthook = excepthooks


def lines(captured: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in captured.splitlines() if line.strip()]


def test_structlog_lines_are_json_with_level_and_timestamp(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure_logging("INFO", json=True)
    structlog.get_logger("t").info("batch_committed", records=3, offsets={"booking.events/0": 3})
    structlog.get_logger("t").debug("below_the_level")
    [line] = lines(capsys.readouterr().err)
    assert line["event"] == "batch_committed" and line["level"] == "info"
    assert line["records"] == 3 and line["offsets"] == {"booking.events/0": 3}
    assert str(line["timestamp"]).endswith("Z")


def test_standard_library_records_are_json_too(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure_logging("INFO", json=True)
    logging.getLogger("aiokafka.consumer").warning("Heartbeat failed for group %s", "booking-sessions")
    logging.getLogger("aiokafka.consumer").info("chatter below warnings is dropped")
    [line] = lines(capsys.readouterr().err)
    assert line == {
        "event": "Heartbeat failed for group booking-sessions",
        "level": "warning",
        "logger": "aiokafka.consumer",
        "timestamp": line["timestamp"],
    }


def test_a_librarys_repeated_line_passes_once_per_window_then_says_how_many_were_held() -> None:
    now = [0.0]
    repeats = logs.RepeatsFilter(window_s=10.0, clock=lambda: now[0])

    def passed(message: str, *args: object) -> list[str]:
        record = logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, message, args, None)
        return [record.getMessage()] if repeats.filter(record) else []

    # A broker that is down: the client's two lines at every reconnect, hundreds a second.
    out = []
    for _ in range(500):
        out += passed("Unable connect to node with id %s: ", 1) + passed("Unable to update metadata from [1]")
        now[0] += 0.01
    assert out == ["Unable connect to node with id 1: ", "Unable to update metadata from [1]"]
    now[0] += 6.0
    assert passed("Unable connect to node with id %s: ", 1) == [
        "Unable connect to node with id 1:  (and 499 more like it in the 11 s before)"
    ]
    assert passed("Unable connect to node with id %s: ", 2) == ["Unable connect to node with id 2: "]  # another text


def test_the_repeats_filter_is_on_the_standard_librarys_lines(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure_logging("INFO", json=True)
    for _ in range(50):
        logging.getLogger("aiokafka").error("Unable connect to node with id %s: ", 1)
    assert [line["event"] for line in lines(capsys.readouterr().err)] == ["Unable connect to node with id 1: "]


def test_a_dead_letter_line_carries_every_field_that_finds_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure_logging("INFO", json=True)
    message_id = "7d0c1d3e-2a51-4a8e-9d35-0b1f0a6d2c11"
    value = json.dumps({"message_id": message_id, "type": "BookingConfirmed", "schema_version": 1,
                        "booking_id": "bk_123", "occurred_at": "not a time"}).encode()  # fmt: skip
    decoded = decode(Record("booking.events", 7, 42, b"bk_123", value), 65536)
    assert decoded.reason == "invalid"
    log_dead_letters([decoded])
    [line] = lines(capsys.readouterr().err)
    assert line["event"] == "record_dead_lettered" and line["level"] == "warning"
    assert {k: line[k] for k in ("reason", "topic", "partition", "offset", "message_id", "booking_id")} == {
        "reason": "invalid",
        "topic": "booking.events",
        "partition": 7,
        "offset": 42,
        "message_id": str(UUID(message_id)),
        "booking_id": "bk_123",
    }
    assert "occurred_at" in str(line["error"])


def test_url_passwords_and_registered_secrets_never_reach_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure_logging("INFO", json=True, secrets=[SecretStr(MEETING_SECRET), SASL_PASSWORD, None])
    url = f"postgresql+asyncpg://booking:{DB_PASSWORD}@db:5432/booking"
    log = structlog.get_logger("t")
    log.warning("connecting", url=url, nested={"items": [url, SASL_PASSWORD]}, secret=SecretStr(MEETING_SECRET))
    try:
        raise ConnectionError(f"cannot reach {url} with {MEETING_SECRET}")
    except ConnectionError:
        log.exception("failed")
        logging.getLogger("sqlalchemy.pool").exception("pool failed for %s", url)
    out = capsys.readouterr().err
    for secret in SECRETS:
        assert secret not in out
    connecting, failed, pool = lines(out)
    assert connecting["url"] == "postgresql+asyncpg://booking:***@db:5432/booking"
    assert connecting["nested"] == {"items": ["postgresql+asyncpg://booking:***@db:5432/booking", "***"]}
    assert connecting["secret"] == "***"
    assert "ConnectionError: cannot reach postgresql+asyncpg://booking:***@db" in str(failed["exception"])
    assert "Traceback" in str(pool["exception"]) and "booking:***@db" in str(pool["event"])


def test_short_secrets_are_masked_where_they_stand_alone() -> None:
    logs.register_secrets(["pw", "abc", " padded-secret-value\n"])
    assert logs.redact("login pw abc failed: 'abc'") == "login *** *** failed: '***'"
    assert logs.redact("abcdef and pwd stay readable") == "abcdef and pwd stay readable"
    # The stripped form too: the value a setting keeps after stripping a file's trailing newline.
    assert logs.redact("key=padded-secret-value.") == "key=***."


def test_a_crash_traceback_never_shows_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    """An exception that escapes every handler: its message and the line holding the secret are masked."""
    logs.configure_logging("INFO", json=True, secrets=[SecretStr(MEETING_SECRET)])

    def crash(secret: str = MEETING_SECRET) -> None:
        raise RuntimeError(f"cannot derive a room under {secret}; local={secret!r}")

    try:
        crash()
    except RuntimeError as error:
        sys.excepthook(type(error), error, error.__traceback__)
        structlog.get_logger("t").exception("crashed", secret_in_locals=MEETING_SECRET)
    thread = threading.Thread(target=crash, name="crasher")
    thread.start()
    thread.join(timeout=10)
    err = capsys.readouterr().err
    assert err.count("Traceback (most recent call last)") >= 2 and "Exception in thread crasher" in err
    assert "RuntimeError: cannot derive a room under ***" in err
    assert MEETING_SECRET not in err


def test_settings_never_show_the_meeting_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKING_MEETING_SECRET", MEETING_SECRET + "\n")
    settings = Settings()
    assert settings.meeting_secret is not None
    assert settings.meeting_secret.get_secret_value() == MEETING_SECRET  # the mount's newline is stripped
    assert MEETING_SECRET not in repr(settings) and MEETING_SECRET not in str(settings)
    assert MEETING_SECRET not in settings.model_dump_json()


def test_help_never_shows_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKING_DATABASE_URL", f"postgresql+asyncpg://booking:{DB_PASSWORD}@db:5432/booking")
    monkeypatch.setenv("BOOKING_KAFKA_BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("BOOKING_KAFKA_SASL_PASSWORD", SASL_PASSWORD)
    monkeypatch.setenv("BOOKING_MEETING_SECRET", MEETING_SECRET)
    runner = CliRunner()
    commands = _command_paths(typer.main.get_command(app))
    assert ["run"] in commands and ["asyncapi"] in commands
    for path in [[], *commands]:
        args = [*path, "--help"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        for secret in SECRETS:
            assert secret not in result.output, f"{' '.join(args)} shows a secret"


def _command_paths(group: object, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    """Every command and subcommand, as the words that name it."""
    paths: list[list[str]] = []
    for name, command in getattr(group, "commands", {}).items():
        paths.append([*prefix, name])
        paths.extend(_command_paths(command, (*prefix, name)))
    return paths


def test_a_coordinator_lookup_the_client_retries_is_a_warning_and_one_it_gives_up_on_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A newcomer's find: every first start of `run` logged "Group Coordinator Request failed: [Error 15]" as an
    # error, though aiokafka retries it and the group forms a moment later.
    from aiokafka.errors import GroupAuthorizationFailedError, GroupCoordinatorNotAvailableError

    logs.configure_logging("INFO", json=True)
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    coordinator.error("Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
    coordinator.error("Group Coordinator Request failed: %s", GroupAuthorizationFailedError())

    levels = [(line["level"], str(line["event"]).split("]")[0]) for line in lines(capsys.readouterr().err)]
    assert levels == [
        ("warning", "Group Coordinator Request failed: [Error 15"),
        ("error", "Group Coordinator Request failed: [Error 30"),
    ]


def test_what_the_client_retries_after_a_pause_is_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    # A newcomer's find: a consumer stopped 70 s (SIGSTOP) and resumed logged three errors, then recovered alone.
    from aiokafka.errors import RequestTimedOutError, TopicAuthorizationFailedError

    logs.configure_logging("INFO", json=True)
    logging.getLogger("aiokafka.consumer.fetcher").error("Failed fetch messages from %s: %s", 1, RequestTimedOutError())
    logging.getLogger("aiokafka.client").error("Unable to update metadata from %s", [1])
    logging.getLogger("aiokafka.consumer.group_coordinator").error(
        "Heartbeat session expired - marking coordinator dead"
    )
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")
    fetcher.error("Failed fetch messages from %s: %s", 1, TopicAuthorizationFailedError())  # not retried: an error
    logging.getLogger("aiokafka.client").error('Unable connect to "%s:%s": %s', "h", 1, OSError())  # the broker away
    # Tansu refuses an idempotent producer: the publisher falls back (its own warning), so not an error either.
    logging.getLogger("aiokafka.producer.sender").error("Unexpected error during InitProducerIdRequest: %s", OSError)
    logging.getLogger("aiokafka.consumer.group_coordinator").error(  # at a rebalance: the client rejoins
        "OffsetCommit failed for group %s due to group error (%s), will rejoin", "g", "IllegalGenerationError"
    )

    levels = [(line["level"], str(line["event"])[:24]) for line in lines(capsys.readouterr().err)]
    assert levels == [
        ("warning", "Failed fetch messages fr"),
        ("warning", "Unable to update metadat"),
        ("warning", "Heartbeat session expire"),
        ("error", "Failed fetch messages fr"),
        ("error", 'Unable connect to "h:1":'),
        ("warning", "Unexpected error during "),
        ("warning", "OffsetCommit failed for "),
    ]


def test_an_offset_reset_is_a_warning_that_says_what_it_means(capsys: pytest.CaptureFixture[str]) -> None:
    # A newcomer's find: retention overtook the committed offset, the reset skipped the records not read yet, and
    # the only trace was aiokafka's info line, which the libraries' WARNING level hid.
    logs.configure_logging("INFO", json=True)
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")
    fetcher.info("Fetch offset %s is out of range for partition %s, resetting offset", 1038, "booking.events/0")
    fetcher.info("some other line of the fetcher's at %s", "info")  # not one of those: still not shown
    [line] = lines(capsys.readouterr().err)
    said = str(line["event"])
    assert line["level"] == "warning"
    assert said.startswith("Fetch offset 1038 is out of range for partition booking.events/0")
    assert "lost to this service" in said and "auto_offset_reset=earliest" in said
    logs.configure_logging("ERROR", json=True)
    fetcher.info("Fetch offset %s is out of range for partition %s, resetting offset", 1038, "booking.events/0")
    assert not lines(capsys.readouterr().err)


def test_a_librarys_error_without_text_is_named_by_its_class(capsys: pytest.CaptureFixture[str]) -> None:
    # A newcomer's find: TLS to a plaintext listener logged 'Unable connect to "h:1": ' and nothing after it.
    logs.configure_logging("INFO", json=True)
    logging.getLogger("aiokafka.client").error('Unable connect to "%s:%s": %s', "h", 1, TimeoutError())
    logging.getLogger("aiokafka.client").error('Unable connect to "%s:%s": %s', "h", 2, OSError("refused"))

    events = [line["event"] for line in lines(capsys.readouterr().err)]
    assert events == ['Unable connect to "h:1": TimeoutError', 'Unable connect to "h:2": refused']
