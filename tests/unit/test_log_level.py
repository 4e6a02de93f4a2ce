"""BOOKING_LOG_LEVEL, one story (booking_sessions/settings.py): Settings decides; unset or empty, the service's
commands log at INFO and the quiet ones (demo, operators' commands) at WARNING; set, it wins everywhere."""

from __future__ import annotations

import pytest

from booking_sessions.settings import Settings


@pytest.mark.parametrize(
    ("value", "service", "quiet"), [(None, "INFO", "WARNING"), ("", "INFO", "WARNING"), ("DEBUG", "DEBUG", "DEBUG")]
)
def test_the_level_of_each_kind_of_command(
    monkeypatch: pytest.MonkeyPatch, value: str | None, service: str, quiet: str
) -> None:
    if value is None:
        monkeypatch.delenv("BOOKING_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("BOOKING_LOG_LEVEL", value)
    settings = Settings()
    assert (settings.logging_level(), settings.logging_level(quiet=True)) == (service, quiet)
