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
# ASCII digits only ([0-9], never \d): 30d in full-width digits (U+FF13 U+FF10) is a typo to refuse, not 30 days.
_DURATION = re.compile(r"(?:[0-9]+[wdhms])+")
_DURATION_PART = re.compile(r"([0-9]+)([wdhms])")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# RFC 3339 with the seconds optional, as operators type it: 2026-11-01T00:00Z, 2026-11-01 09:30:15+01:00.
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_NUMBER = re.compile(r"[0-9]+")

# The longest duration anything accepts (options and BOOKING_*_RETENTION): a century, so that "now minus it" stays
# inside what datetime and PostgreSQL hold and a typo of extra digits is refused instead of overflowing.
MAX_DURATION = timedelta(days=36500)
# Times an operator may name (--since, --until): what Kafka's timestamps (ms since 1970) and datetime both hold.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, tzinfo=UTC)
# Kafka's partition numbers are int32 and its offsets int64.
MAX_PARTITION = 2**31 - 1
MAX_OFFSET = 2**63 - 1


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w``, or a sum such as ``1d12h`` (ASCII digits); raises ArgumentError
    for anything else, for zero and for more than MAX_DURATION (a century), never OverflowError."""
    compact = text.strip().lower()
    if not _DURATION.fullmatch(compact):
        raise ArgumentError(f"{text!r} is not a duration: use a number and a unit (w, d, h, m, s), e.g. 30d or 12h")
    parts = _DURATION_PART.findall(compact)
    # Integer seconds: timedelta(days=10**11) would overflow; a number of more than 20 digits is refused unread.
    too_long = any(len(n) > 20 for n, _ in parts)
    seconds = 0 if too_long else sum(int(n) * int(_UNITS[unit].total_seconds()) for n, unit in parts)
    if seconds <= 0 and not too_long:
        raise ArgumentError(f"{text!r}: the duration must be longer than zero")
    if too_long or seconds > MAX_DURATION.total_seconds():
        raise ArgumentError(f"{text!r}: the duration must be at most {MAX_DURATION.days}d (a century)")
    return timedelta(seconds=seconds)


def parse_moment(text: str, now: datetime) -> datetime:
    """A point in time: an RFC 3339 timestamp (seconds optional), a date (midnight UTC), or a duration ago.

    ``2026-11-01T00:00Z``, ``2026-11-01T09:30:00+01:00``, ``2026-11-01``, ``6h`` (six hours before ``now``).
    Returns an aware datetime in UTC between EARLIEST and LATEST; raises ArgumentError for anything else (a
    timestamp without an offset too, one outside those bounds, a duration longer than ``now`` allows).
    """
    value = text.strip()
    if _DURATION.fullmatch(value.lower()):
        return _bounded(now - parse_duration(value), text)
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
        parsed = datetime.fromisoformat(value)
    except ValueError as error:
        raise ArgumentError(f"{original!r} is not a valid time: {error}") from None
    try:
        moment: datetime | None = parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59-12:00 is past the year 9999 in UTC
        moment = None
    return _bounded(moment, original)


def _bounded(moment: datetime | None, original: str) -> datetime:
    if moment is None or not EARLIEST <= moment <= LATEST:
        raise ArgumentError(
            f"{original!r} is out of range: a time must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)"
        )
    return moment


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
        match = re.fullmatch(r"([0-9]+)\s*[:=]\s*([0-9]+)", item)
        if match is None:
            raise ArgumentError(f"{item!r} is not partition:offset (e.g. --offsets 0:120,3:55)")
        partition, offset = _position(match.group(1), match.group(2), item)
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
            if _NUMBER.fullmatch(item):
                positions.add(_position("0", item, item))
                continue
            match = re.fullmatch(r"([0-9]+)\s*[:/]\s*([0-9]+)", item)
            if match is None:
                raise ArgumentError(f"{item!r} is not a DLQ position: use offset or partition:offset (e.g. 0:17)")
            positions.add(_position(match.group(1), match.group(2), item))
    return frozenset(positions)


def _position(partition: str, offset: str, item: str) -> tuple[int, int]:
    """ASCII digits as (partition, offset), within Kafka's int32 and int64; raises ArgumentError beyond."""
    p, o = int(partition), int(offset)
    if p > MAX_PARTITION or o > MAX_OFFSET:
        raise ArgumentError(f"{item!r}: a partition is at most {MAX_PARTITION}, an offset at most {MAX_OFFSET}")
    return p, o


def choose(values: Iterable[str], allowed: Iterable[str], option: str) -> frozenset[str]:
    """Values of a repeatable option that must come from a fixed set (reasons, event types); each value may be a
    comma-separated list. Raises ArgumentError naming the unknown ones and the choices."""
    known = tuple(allowed)
    chosen = frozenset(v.strip() for value in values for v in value.split(",") if v.strip())
    unknown = sorted(chosen - set(known))
    if unknown:
        raise ArgumentError(f"{option} {', '.join(unknown)}: unknown; choose from {', '.join(known)}")
    return chosen


def booking_ids(values: Iterable[str]) -> tuple[str, ...]:
    """Pure: ``values`` (``--booking``, a ``--booking-file``'s lines) once each, in order; ArgumentError naming the
    first few that cannot be a booking's id (CONTRACT "Input"): a typo must not read as a booking without a session,
    which exits 0 having done nothing."""
    from booking_sessions.ops.untrusted import visible
    from models.fields import is_booking_id

    ids = tuple(dict.fromkeys(values))
    wrong = [b for b in ids if not is_booking_id(b)]
    if wrong:
        shown = ", ".join(repr(visible(b)) for b in wrong[:5])
        raise ArgumentError(f"not a booking id (1 to 64 of A-Z a-z 0-9 _ . : -): {shown}")
    return ids
