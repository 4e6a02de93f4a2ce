"""BOOKING_MEETING_SECRET: at least 32 bytes after stripping whitespace; refused without echoing the value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from booking_sessions.cli import app
from booking_sessions.settings import Settings

SHORT = "short-secret-sentinel"  # 21 bytes


@pytest.mark.parametrize("value", [SHORT, "x" * 31, "  " + "x" * 31 + "\n", "é" * 15 + "x"])
def test_a_secret_under_32_bytes_after_stripping_is_refused_without_its_value(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(meeting_secret=value)
    text = str(caught.value)
    assert "at least 32 bytes after stripping whitespace" in text
    assert value.strip() not in text


@pytest.mark.parametrize("value", ["x" * 32, "é" * 16, "\t" + "k" * 40 + "\r\n"])
def test_32_bytes_or_more_are_accepted_and_stripped(value: str) -> None:
    settings = Settings(meeting_secret=value)
    assert settings.meeting_secret is not None
    assert settings.meeting_secret.get_secret_value() == value.strip()


@pytest.mark.parametrize("value", ["", " \n"])
def test_an_empty_secret_counts_as_not_set(value: str) -> None:
    assert Settings(meeting_secret=value).meeting_secret is None


def test_the_command_names_the_variable_and_the_rule_but_never_the_value() -> None:
    result = CliRunner().invoke(app, ["migrate"], env={"BOOKING_MEETING_SECRET": SHORT})
    assert result.exit_code == 2
    assert "BOOKING_MEETING_SECRET" in result.output and "at least 32 bytes" in result.output
    assert SHORT not in result.output


def test_key_version_and_embedded_servers_are_checked() -> None:
    assert Settings().meeting_key_version == 1 and Settings().embedded_servers == "allow"
    with pytest.raises(ValidationError):
        Settings(meeting_key_version=0)
    with pytest.raises(ValidationError):
        Settings(embedded_servers="sometimes")
