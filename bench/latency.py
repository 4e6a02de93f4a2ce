"""Pure: produce -> offset commit latencies from send times and the batches the service committed."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from bench.service_path import Committed


def commit_latencies_s(
    topic: str, sent_at: Mapping[int, Mapping[int, float]], batches: Iterable[Committed]
) -> list[float]:
    """For every sent record: the time of the first offset commit past it, minus its send time."""
    pending = {p: sorted(offsets) for p, offsets in sent_at.items()}
    cursor = dict.fromkeys(pending, 0)
    latencies: list[float] = []
    for batch in sorted(batches, key=lambda b: b.at):
        for (t, p), next_offset in batch.offsets.items():
            if t != topic or p not in pending:
                continue
            offsets, i = pending[p], cursor[p]
            while i < len(offsets) and offsets[i] < next_offset:
                latencies.append(batch.at - sent_at[p][offsets[i]])
                i += 1
            cursor[p] = i
    return latencies


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def created_latencies_s(sent_at: Mapping[str, float], seen_at: Mapping[str, float]) -> list[float]:
    """For every booking whose ``SessionCreated`` was read (``seen_at``, by booking id): the time it was read minus
    the send time of the booking event that created the session (``sent_at``, by booking id). Bookings sent but
    not seen are left out (the caller counts them); one seen but never sent is a bench error."""
    return [seen - sent_at[booking] for booking, seen in seen_at.items()]


def first_sent_at(booking_ids: Iterable[str], started: float, rate_per_s: float) -> dict[str, float]:
    """Paced production: record ``i`` was due at ``started + i / rate_per_s``; each booking's first record is the
    one that creates its session (the workload never starts a booking with its cancellation)."""
    sent: dict[str, float] = {}
    for i, booking in enumerate(booking_ids):
        sent.setdefault(booking, started + i / rate_per_s)
    return sent


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)
