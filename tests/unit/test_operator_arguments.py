"""The operators' argument syntax: durations, times, partition offsets, DLQ positions, fixed choices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from booking_sessions.ops.arguments import (
    ArgumentError,
    choose,
    parse_duration,
    parse_moment,
    parse_offsets,
    parse_positions,
    parse_range,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        (" 7D ", timedelta(days=7)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["30", "d", "30 days", "-1d", "1.5h", "0d", ""])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(ArgumentError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01T00:00Z", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T09:30:15+01:00", datetime(2026, 11, 1, 8, 30, 15, tzinfo=UTC)),
        ("2026-11-01 09:30:15.250Z", datetime(2026, 11, 1, 9, 30, 15, 250000, tzinfo=UTC)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("6h", NOW - timedelta(hours=6)),
        ("30d", NOW - timedelta(days=30)),
    ],
)
def test_moments(text: str, expected: datetime) -> None:
    moment = parse_moment(text, NOW)
    assert moment == expected and moment.tzinfo == UTC


@pytest.mark.parametrize("text", ["yesterday", "2026-11-01T00:00", "2026-13-01T00:00Z", "1764000000", "2026-02-30"])
def test_bad_moments_are_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ArgumentError, match=r"not a (valid )?time"):
        parse_moment(text, NOW)


def test_range_must_go_forward() -> None:
    assert parse_range(None, None, NOW) == (None, None)
    assert parse_range("2h", "1h", NOW) == (NOW - timedelta(hours=2), NOW - timedelta(hours=1))
    with pytest.raises(ArgumentError, match=r"--until .* must be later than --since"):
        parse_range("1h", "2h", NOW)


def test_offsets() -> None:
    assert parse_offsets("0:120,3:55") == {0: 120, 3: 55}
    assert parse_offsets("1=7") == {1: 7}
    for bad, message in (("0:1,0:2", "given twice"), ("0", "partition:offset"), ("a:1", "partition:offset")):
        with pytest.raises(ArgumentError, match=message):
            parse_offsets(bad)


def test_dlq_positions() -> None:
    assert parse_positions(["17", "2:4", "0/9,3"]) == {(0, 17), (2, 4), (0, 9), (0, 3)}
    with pytest.raises(ArgumentError, match="not a DLQ position"):
        parse_positions(["x"])


def test_choices() -> None:
    assert choose(["invalid,too_large", "invalid"], ("invalid", "too_large", "x"), "--reason") == {
        "invalid",
        "too_large",
    }
    with pytest.raises(ArgumentError, match="--reason nope: unknown; choose from invalid, too_large"):
        choose(["nope"], ("invalid", "too_large"), "--reason")
