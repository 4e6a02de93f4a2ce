"""The meeting key: fingerprint, the version rules against meeting_keys, and where embedded servers may start."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from booking_sessions.cli import app
from booking_sessions.dev.servers import servers_for, with_throwaway_secret
from booking_sessions.meeting import MeetingKey, ThrowawaySecret, fingerprint, key_problem, meeting_key
from booking_sessions.settings import Settings
from models.errors import ConfigurationError

KEY_1 = "first-key-of-at-least-thirty-two-bytes"
KEY_2 = "second-key-of-at-least-thirty-two-bytes"
REPO = Path(__file__).resolve().parents[2]


def test_the_fingerprint_is_a_keyed_digest_of_a_label_never_the_key() -> None:
    found = fingerprint(KEY_1.encode())
    assert re.fullmatch(r"[0-9a-f]{16}", found)
    assert (
        found == hmac.new(KEY_1.encode(), b"booking-sessions meeting-key fingerprint", hashlib.sha256).hexdigest()[:16]
    )
    assert found != fingerprint(KEY_2.encode())
    assert KEY_1 not in repr(MeetingKey(KEY_1.encode(), 1))


def test_a_new_key_version_is_accepted_and_a_recorded_one_must_match() -> None:
    f1, f2 = fingerprint(KEY_1.encode()), fingerprint(KEY_2.encode())
    assert key_problem(1, f1, {}) is None
    assert key_problem(1, f1, {1: f1}) is None
    assert key_problem(2, f2, {1: f1}) is None
    mismatch = key_problem(1, f2, {1: f1})
    assert mismatch is not None
    assert f1 in mismatch and f2 in mismatch and "BOOKING_MEETING_KEY_VERSION=2" in mismatch
    assert "meeting rekey --all" in mismatch


def test_a_new_version_needs_a_new_key_and_an_old_version_is_refused() -> None:
    f1, f2 = fingerprint(KEY_1.encode()), fingerprint(KEY_2.encode())
    reused = key_problem(2, f1, {1: f1})
    assert reused is not None and "key of version 1 already" in reused
    older = key_problem(1, f1, {1: f1, 2: f2})
    assert older is not None and "older than version 2" in older and "BOOKING_MEETING_KEY_VERSION=2" in older


def test_meeting_key_requires_the_secret_and_knows_a_throwaway_one() -> None:
    with pytest.raises(ConfigurationError, match="BOOKING_MEETING_SECRET is required"):
        meeting_key(Settings())
    key = meeting_key(Settings(meeting_secret=KEY_2, meeting_key_version=2))
    assert key.version == 2 and not key.throwaway and key.secret == KEY_2.encode()
    throwaway = meeting_key(with_throwaway_secret(Settings()))
    assert throwaway.throwaway and len(throwaway.secret) >= 32
    assert isinstance(with_throwaway_secret(Settings()).meeting_secret, ThrowawaySecret)
    assert with_throwaway_secret(Settings(meeting_secret=KEY_1)).meeting_secret.get_secret_value() == KEY_1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("bootstrap", "unset"),
    [
        (None, "BOOKING_KAFKA_BOOTSTRAP and BOOKING_DATABASE_URL"),
        ("127.0.0.1:9", "BOOKING_DATABASE_URL"),
    ],
)
async def test_forbidden_embedded_servers_fail_closed_before_starting_anything(
    bootstrap: str | None, unset: str
) -> None:
    said: list[str] = []
    with pytest.raises(ConfigurationError) as caught:
        async with servers_for(Settings(kafka_bootstrap=bootstrap), said.append, forbid_embedded=True):
            pass
    assert str(caught.value).startswith(f"{unset} not set, and BOOKING_EMBEDDED_SERVERS=forbid")
    assert said == []  # nothing was started


def test_run_in_forbid_mode_stops_with_one_line() -> None:
    result = CliRunner().invoke(app, ["run"], env={"BOOKING_EMBEDDED_SERVERS": "forbid"})
    assert result.exit_code == 2
    assert "BOOKING_EMBEDDED_SERVERS=forbid" in result.output and "Traceback" not in result.output


def test_the_production_image_forbids_embedded_servers() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^\s*BOOKING_EMBEDDED_SERVERS=forbid\b", dockerfile, re.MULTILINE)


def test_the_key_of_another_version_is_named_as_such() -> None:
    f1, f2 = fingerprint(KEY_1.encode()), fingerprint(KEY_2.encode())
    newest = key_problem(1, f2, {1: f1, 2: f2})
    assert newest is not None and "is the key of version 2 already: set BOOKING_MEETING_KEY_VERSION=2" in newest
    leaked = key_problem(3, f1, {1: f1, 2: f2})
    assert leaked is not None and "key of version 1 already: a new version needs a new secret" in leaked


def test_run_without_a_secret_says_so_before_connecting_to_anything() -> None:
    # A newcomer's find: `run` listed the topics first, so a forgotten secret read as a broker that was away.
    env = {
        "BOOKING_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "BOOKING_DATABASE_URL": "postgresql+asyncpg://u@127.0.0.1:1/db",
        "BOOKING_MEETING_SECRET": None,
        "BOOKING_METRICS_PORT": "0",
    }
    result = CliRunner().invoke(app, ["run"], env=env, terminal_width=400)
    assert result.exit_code == 2, result.output
    assert "BOOKING_MEETING_SECRET is required" in result.output
    assert "Kafka" not in result.output
