"""Pure: the operators' argument syntax (timestamps, durations, partition offsets), one readable error each."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from models.errors import BookingSessionsError


class ArgumentError(BookingSessionsError, ValueError):
    """An operator's argument cannot be read; the message says what was expected (exit code 2)."""


_UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}
_UNITS["s"] = timedelta(seconds=1)
_DURATION = re.compile(r"(?:\d+[wdhms])+")
_DURATION_PART = re.compile(r"(\d+)([wdhms])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# RFC 3339 with the seconds optional, as operators type it: 2026-11-01T00:00Z, 2026-11-01 09:30:15+01:00.
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})")


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w``, or a sum such as ``1d12h``; raises ArgumentError for anything else
    and for zero."""
    compact = text.strip().lower()
    if not _DURATION.fullmatch(compact):
        raise ArgumentError(f"{text!r} is not a duration: use a number and a unit (w, d, h, m, s), e.g. 30d or 12h")
    total = sum((int(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(compact)), timedelta())
    if total <= timedelta():
        raise ArgumentError(f"{text!r}: the duration must be longer than zero")
    return total


def parse_moment(text: str, now: datetime) -> datetime:
    """A point in time: an RFC 3339 timestamp (seconds optional), a date (midnight UTC), or a duration ago.

    ``2026-11-01T00:00Z``, ``2026-11-01T09:30:00+01:00``, ``2026-11-01``, ``6h`` (six hours before ``now``).
    Returns an aware datetime in UTC; raises ArgumentError for anything else (a timestamp without an offset too).
    """
    value = text.strip()
    if _DURATION.fullmatch(value.lower()):
        return now - parse_duration(value)
    if _DATE.fullmatch(value):
        return _from_iso(f"{value}T00:00:00+00:00", text)
    if _TIMESTAMP.fullmatch(value):
        return _from_iso(re.sub(r"[Zz]$", "+00:00", value), text)
    raise ArgumentError(
        f"{text!r} is not a time: use an RFC 3339 timestamp with an offset (2026-11-01T00:00Z), "
        "a date (2026-11-01, midnight UTC) or a duration ago (6h, 30d)"
    )


def _from_iso(value: str, original: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise ArgumentError(f"{original!r} is not a valid time: {error}") from None
    return moment.astimezone(UTC)


def parse_range(since: str | None, until: str | None, now: datetime) -> tuple[datetime | None, datetime | None]:
    """``--since`` and ``--until`` (each as ``parse_moment``, None when not given) as a half-open range [start, end).

    Raises ArgumentError for a time that cannot be read, or an end not later than the start."""
    start = parse_moment(since, now) if since is not None else None
    end = parse_moment(until, now) if until is not None else None
    if start is not None and end is not None and end <= start:
        raise ArgumentError(f"--until ({until}) must be later than --since ({since})")
    return start, end


def parse_offsets(text: str) -> dict[int, int]:
    """``0:120,3:55``: partition 0 from offset 120 and partition 3 from offset 55 (``=`` works as well), as
    {partition: offset}; raises ArgumentError for another form or a partition given twice."""
    offsets: dict[int, int] = {}
    for item in (part.strip() for part in text.split(",")):
        match = re.fullmatch(r"(\d+)\s*[:=]\s*(\d+)", item)
        if match is None:
            raise ArgumentError(f"{item!r} is not partition:offset (e.g. --offsets 0:120,3:55)")
        partition, offset = int(match.group(1)), int(match.group(2))
        if partition in offsets:
            raise ArgumentError(f"partition {partition} is given twice in {text!r}")
        offsets[partition] = offset
    return offsets


def parse_positions(values: Iterable[str]) -> frozenset[tuple[int, int]]:
    """DLQ positions, ``partition:offset`` or a bare offset (partition 0, the usual single-partition DLQ), each value
    possibly a comma-separated list; as (partition, offset) pairs. Raises ArgumentError for another form."""
    positions = set()
    for value in values:
        for item in (part.strip() for part in value.split(",")):
            if item.isdigit():
                positions.add((0, int(item)))
                continue
            match = re.fullmatch(r"(\d+)\s*[:/]\s*(\d+)", item)
            if match is None:
                raise ArgumentError(f"{item!r} is not a DLQ position: use offset or partition:offset (e.g. 0:17)")
            positions.add((int(match.group(1)), int(match.group(2))))
    return frozenset(positions)


def choose(values: Iterable[str], allowed: Iterable[str], option: str) -> frozenset[str]:
    """Values of a repeatable option that must come from a fixed set (reasons, event types); each value may be a
    comma-separated list. Raises ArgumentError naming the unknown ones and the choices."""
    known = tuple(allowed)
    chosen = frozenset(v.strip() for value in values for v in value.split(",") if v.strip())
    unknown = sorted(chosen - set(known))
    if unknown:
        raise ArgumentError(f"{option} {', '.join(unknown)}: unknown; choose from {', '.join(known)}")
    return chosen
