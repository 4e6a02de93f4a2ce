"""Pure: the benchmark's records, generated deterministically from a seed. No I/O, no clock.

N events over N/10 bookings. Every booking gets an approval and a confirmation (for one booking in ten the
confirmation arrives first and the older approval after it), then repeated confirmations (a new message id, the
same snapshot) and reschedules (a newer snapshot with another start time). 5% of the records are cancellations:
half the bookings get one, somewhere after their approval and confirmation, so some later records of theirs are
newer snapshots of a cancelled session; whether a session was announced before its cancellation depends on the
batches it fell into. 5% of the records are redeliveries:
byte-for-byte copies of an earlier record of the same booking, a little later in the stream (sometimes in the same
batch, sometimes a few batches later). Bookings overlap in time: a booking's records spread over about 20,000
records of the stream (ten batches of the service), whatever N, so every batch mixes many bookings and the mix per
batch is the same for 20,000 events as for 1,000,000.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Kind = Literal["approved", "confirmed", "reconfirmed", "rescheduled", "cancelled", "redelivered"]

EVENTS_PER_BOOKING = 10
REDELIVERED_SHARE = 0.05
CANCELLED_SHARE = 0.05  # of the records; at most one per booking
RESCHEDULED_SHARE = 0.2  # of the events beyond each booking's approval and confirmation
LATE_APPROVAL_SHARE = 0.1  # bookings whose (older) approval arrives after the confirmation
REDELIVERY_MAX_GAP = 3000  # records later in the whole stream: spans a batch boundary or not
MEAN_GAP_RECORDS = 2000  # between two records of one booking, in records of the whole stream
TARGET_VALUE_BYTES = 380  # the reference workload's record size
# Well in the past: an occurred_at may be at most BOOKING_MAX_CLOCK_SKEW_S (1 h) later than its record's Kafka
# timestamp, which is the time the bench publishes it; every event of the workload must be applied.
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class BenchRecord:
    key: bytes
    value: bytes
    booking: int  # index of the booking, 0 ≤ booking < Workload.bookings
    kind: Kind


@dataclass(frozen=True, slots=True)
class Workload:
    records: tuple[BenchRecord, ...]
    bookings: int
    prefix: str

    @property
    def events(self) -> int:
        return len(self.records)

    @property
    def counts(self) -> Counter[Kind]:
        return Counter(r.kind for r in self.records)

    @property
    def cancelled_bookings(self) -> int:
        """Sessions the service must end with CANCELLED (and their reservations)."""
        return self.counts["cancelled"]

    @property
    def unique_message_ids(self) -> int:
        """Rows the inbox ends with: every record except the redelivered copies."""
        return self.events - self.counts["redelivered"]

    def booking_id(self, booking: int) -> str:
        return booking_id(self.prefix, booking)

    def sample(self, every: int) -> Workload:
        """Complete histories of every ``every``-th booking, in stream order: the same mix, fewer records."""
        picked = tuple(r for r in self.records if r.booking % every == 0)
        return Workload(picked, len(range(0, self.bookings, every)), self.prefix)


def booking_id(prefix: str, booking: int) -> str:
    return f"{prefix}_{booking:07d}"


def generate(events: int, *, seed: int = 7, prefix: str = "bk") -> Workload:
    """``events`` records over ``events // 10`` bookings (at least one); the same arguments give the same bytes."""
    if events < 2 * EVENTS_PER_BOOKING:
        raise ValueError(f"at least {2 * EVENTS_PER_BOOKING} events, got {events}")
    rng = random.Random(seed)
    bookings = events // EVENTS_PER_BOOKING
    redelivered = round(events * REDELIVERED_SHARE)
    cancelled = min(bookings, round(events * CANCELLED_SHARE))
    extras = events - redelivered - 2 * bookings - cancelled
    rescheduled = round(extras * RESCHEDULED_SHARE)
    reschedule: Kind = "rescheduled"
    reconfirm: Kind = "reconfirmed"
    extra_kinds = [reschedule] * rescheduled + [reconfirm] * (extras - rescheduled)
    rng.shuffle(extra_kinds)
    owners = sorted(rng.choices(range(bookings), k=extras))
    per_booking: list[list[Kind]] = [[] for _ in range(bookings)]
    for owner, kind in zip(owners, extra_kinds, strict=True):
        per_booking[owner].append(kind)
    for owner in rng.sample(range(bookings), cancelled):
        per_booking[owner].insert(rng.randint(0, len(per_booking[owner])), "cancelled")

    timed: list[tuple[float, int, BenchRecord]] = []
    for b in range(bookings):
        for j, (at, record) in enumerate(_booking_history(rng, prefix, b, per_booking[b], events)):
            timed.append((at, b * 1000 + j, record))
    timed.sort(key=lambda t: (t[0], t[1]))
    originals = [record for _, _, record in timed]
    return Workload(_with_redeliveries(rng, originals, redelivered), bookings, prefix)


def _booking_history(
    rng: random.Random, prefix: str, b: int, extras: Sequence[Kind], events: int
) -> list[tuple[float, BenchRecord]]:
    """One booking's records with their place in the stream (in records, from 0): arrival order."""
    bid = booking_id(prefix, b)
    student, instructor = f"u_s{b}", f"u_i{b % 997}"
    occurred = _EPOCH + timedelta(seconds=rng.randrange(30 * 24 * 3600))
    start = occurred + timedelta(days=rng.randrange(2, 60), hours=rng.randrange(8, 20))
    duration = rng.choice((30, 45, 60, 90))
    title = f"Algebra II, unit {b % 12 + 1}: exercises and review"

    def make(kind: Kind, kind_type: str, at: datetime, scheduled: datetime, auto: bool) -> BenchRecord:
        body: dict[str, object] = {
            "message_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "type": kind_type,
            "schema_version": 1,
            "occurred_at": _rfc3339(at),
            "booking_id": bid,
            "booking": {
                "student_id": student,
                "instructor_id": instructor,
                "scheduled_start": _rfc3339(scheduled),
                "duration_minutes": duration,
                "title": title,
            },
            "auto_approved": auto,
        }
        if kind == "cancelled":
            body["cancellation_reason"] = "the student cancelled"
        value = json.dumps(body, separators=(",", ":"))
        pad = TARGET_VALUE_BYTES - len(value) - len(',"trace":""')
        if pad > 0:  # an extra field the contract ignores, as upstream producers add them
            value = f'{value[:-1]},"trace":"{"t" * pad}"}}'
        return BenchRecord(bid.encode(), value.encode(), b, kind)

    approved = make("approved", "BookingApproved", occurred, start, rng.random() < 0.5)
    confirmed = make("confirmed", "BookingConfirmed", occurred + timedelta(minutes=5), start, False)
    history = [confirmed, approved] if rng.random() < LATE_APPROVAL_SHARE else [approved, confirmed]
    at = occurred + timedelta(minutes=5)
    for kind in extras:
        at += timedelta(minutes=rng.randrange(1, 600))
        if kind == "rescheduled":
            start += timedelta(days=rng.randrange(1, 8))
        history.append(make(kind, "BookingCancelled" if kind == "cancelled" else "BookingConfirmed", at, start, False))
    place = rng.uniform(0, events)
    places = []
    for _ in history:
        places.append(place)
        place += rng.expovariate(1 / MEAN_GAP_RECORDS)
    return list(zip(places, history, strict=True))


def _with_redeliveries(rng: random.Random, originals: list[BenchRecord], count: int) -> tuple[BenchRecord, ...]:
    """Copies of earlier records, each placed a little after its original (so in the same partition, later)."""
    placed: list[tuple[float, BenchRecord]] = [(float(i), r) for i, r in enumerate(originals)]
    last = len(originals) - 1
    for _ in range(count):
        i = rng.randrange(len(originals))
        original = originals[i]
        copy = BenchRecord(original.key, original.value, original.booking, "redelivered")
        placed.append((min(i + rng.uniform(0.5, REDELIVERY_MAX_GAP), last + 0.5), copy))
    placed.sort(key=lambda t: t[0])
    return tuple(r for _, r in placed)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
