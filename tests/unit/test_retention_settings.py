"""BOOKING_INBOX_RETENTION / BOOKING_OUTBOX_RETENTION: the operators' duration syntax, off, and a floor of 1 h."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from booking_sessions.settings import Settings


def test_defaults_keep_the_inbox_a_month_and_published_outbox_rows_a_week() -> None:
    settings = Settings()
    assert (settings.inbox_retention, settings.outbox_retention) == (timedelta(days=30), timedelta(days=7))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30d", timedelta(days=30)), ("2w", timedelta(weeks=2)), ("1d12h", timedelta(hours=36)),
     ("1h", timedelta(hours=1)), ("off", None), ("OFF", None), (" Off ", None)],
)  # fmt: skip
def test_durations_and_off(monkeypatch: pytest.MonkeyPatch, text: str, expected: timedelta | None) -> None:
    monkeypatch.setenv("BOOKING_INBOX_RETENTION", text)
    monkeypatch.setenv("BOOKING_OUTBOX_RETENTION", text)
    settings = Settings()
    assert (settings.inbox_retention, settings.outbox_retention) == (expected, expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [("30m", "at least 1h"), ("30", "not a duration"), ("-1d", "not a duration"), ("0d", "longer than zero"),
     ("0", "ambiguous: write off"), ("none", "ambiguous: write off")],
)  # fmt: skip
def test_too_short_or_unreadable_is_refused(monkeypatch: pytest.MonkeyPatch, text: str, message: str) -> None:
    monkeypatch.setenv("BOOKING_INBOX_RETENTION", text)
    with pytest.raises(ValidationError, match=message):
        Settings()


@pytest.mark.parametrize("text", ["0", "none"])
def test_zero_or_none_for_the_outbox_is_refused_too(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("BOOKING_OUTBOX_RETENTION", text)
    with pytest.raises(ValidationError, match="ambiguous: write off to keep rows for ever"):
        Settings()
