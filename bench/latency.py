"""Pure: produce -> offset commit latencies from send times and the batches the service committed."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

from bench.service_path import Committed


def commit_latencies_s(
    topic: str, sent_at: Mapping[int, Mapping[int, float]], batches: Iterable[Committed]
) -> list[float]:
    """For every sent record: the time of the first offset commit past it, minus its send time."""
    return [batch.at - sent for sent, batch in _committing_batch(topic, sent_at, batches)]


def _committing_batch(
    topic: str, sent_at: Mapping[int, Mapping[int, float]], batches: Iterable[Committed]
) -> Iterator[tuple[float, Committed]]:
    """For every sent record (``sent_at``: partition -> offset -> send time), its send time and the first batch whose
    offset commit went past it."""
    for _, _, sent, batch in _committing_batch_at(topic, sent_at, batches):
        yield sent, batch


def _committing_batch_at(
    topic: str, sent_at: Mapping[int, Mapping[int, float]], batches: Iterable[Committed]
) -> Iterator[tuple[int, int, float, Committed]]:
    """``_committing_batch``, each with the record's partition and offset first."""
    pending = {p: sorted(offsets) for p, offsets in sent_at.items()}
    cursor = dict.fromkeys(pending, 0)
    for batch in sorted(batches, key=lambda b: b.at):
        for (t, p), next_offset in batch.offsets.items():
            if t != topic or p not in pending:
                continue
            offsets, i = pending[p], cursor[p]
            while i < len(offsets) and offsets[i] < next_offset:
                yield p, offsets[i], sent_at[p][offsets[i]], batch
                i += 1
            cursor[p] = i


def latency_split(topic: str, sent_at: Mapping[int, Mapping[int, float]], batches: Iterable[Committed]) -> str:
    """Where (f)'s produce -> offset commit went, per record, p50 and p99 of each part in ms: from its send time to
    the start of its batch's apply (the producer's linger, the fetch, and the batches ahead of it), its batch's
    transactions, and from their end to the offset commit (the previous batch's commit, then its own). "" when a
    batch does not say when its apply began (``Committed.total_s`` 0: older service code)."""
    waited, applied, after = [], [], []
    for sent, batch in _committing_batch(topic, sent_at, batches):
        if batch.total_s <= 0:
            return ""
        waited.append(batch.at - batch.total_s - sent)
        applied.append(batch.database_s)
        after.append(batch.total_s - batch.database_s)
    if not waited:
        return ""
    parts = (("to its batch's start", waited), ("its batch's transactions", applied), ("then to the commit", after))
    return "a record's p50/p99: " + ", ".join(
        f"{name} {percentile(values, 50) * 1000:.0f}/{percentile(values, 99) * 1000:.0f} ms" for name, values in parts
    )


def created_split(
    topic: str,
    creating: Mapping[str, tuple[int, int]],
    sent_at: Mapping[int, Mapping[int, float]],
    seen_at: Mapping[str, float],
    batches: Iterable[Committed],
) -> str:
    """Where (h2)'s produce -> SessionCreated readable went, per session, p50 and p99 of each part in ms: from the
    send time of the record that created it to the end of its batch's transactions (as (f) splits it: waiting,
    then the transactions), then to the SessionCreated being read (the relay's wake-up and step: shard locks,
    select, produce and acknowledgement; the watcher's fetch). ``creating``: booking id -> (partition, offset) of
    that record; ``sent_at`` as for ``commit_latencies_s``; ``seen_at``: booking id -> when its SessionCreated was
    read. Sessions not read are left out. "" when a batch does not say when its apply began."""
    where = {placed: booking for booking, placed in creating.items() if booking in seen_at}
    subset: dict[int, dict[int, float]] = {}
    for partition, offset in where:
        subset.setdefault(partition, {})[offset] = sent_at[partition][offset]
    applied, relayed = [], []
    for partition, offset, sent, batch in _committing_batch_at(topic, subset, batches):
        if batch.total_s <= 0:
            return ""
        transactions_end = batch.at - batch.total_s + batch.database_s
        applied.append(transactions_end - sent)
        relayed.append(seen_at[where[(partition, offset)]] - transactions_end)
    if not applied:
        return ""
    parts = (("to its batch's transactions' end", applied), ("then to readable (the relay, the watcher)", relayed))
    return "a session's p50/p99: " + ", ".join(
        f"{name} {percentile(values, 50) * 1000:.0f}/{percentile(values, 99) * 1000:.0f} ms" for name, values in parts
    )


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


def p99_by_second(sent_at: Mapping[str, float], seen_at: Mapping[str, float], started: float) -> str:
    """The p99 of ``created_latencies_s`` for the sessions whose creating event was sent in each whole second
    after ``started``, in ms, in order: "839, 731, ..., 141". A queue left by the stage's start shows as a p99
    that falls second by second, one the service cannot keep up with as one that grows; "" for no session."""
    by_second: dict[int, list[float]] = {}
    for booking, seen in seen_at.items():
        by_second.setdefault(int(sent_at[booking] - started), []).append((seen - sent_at[booking]) * 1000)
    return ", ".join(f"{percentile(by_second[s], 99):.0f}" for s in sorted(by_second))


def first_sent_at(booking_ids: Iterable[str], started: float, rate_per_s: float) -> dict[str, float]:
    """Paced production: record ``i`` was due at ``started + i / rate_per_s``; each booking's first record is the
    one that creates its session (the workload never starts a booking with its cancellation)."""
    sent: dict[str, float] = {}
    for i, booking in enumerate(booking_ids):
        sent.setdefault(booking, started + i / rate_per_s)
    return sent


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def batch_trend(batches: Sequence[Committed]) -> str:
    """How a paced run's batches changed from its first quarter (by commit time) to its last: their mean size in
    records, and their transactions' time per record in µs. Each batch takes what arrived while the one before was
    applied, so a service with room to spare keeps its batches level, and one at the limit of what it can apply
    live sees them grow for as long as the run lasts, and the latency with them. "" for fewer than 8 batches."""
    if len(batches) < 8:
        return ""
    ordered = sorted(batches, key=lambda b: b.at)
    start, end = ordered[0].at, ordered[-1].at
    quarter = (end - start) / 4
    first = [b for b in ordered if b.at <= start + quarter]
    last = [b for b in ordered if b.at >= end - quarter]

    def size(part: Sequence[Committed]) -> float:
        return sum(b.records for b in part) / len(part)

    def per_record_us(part: Sequence[Committed]) -> float:
        return sum(b.database_s for b in part) * 1e6 / max(1, sum(b.records for b in part))

    return (
        f"batches {size(first):,.0f} -> {size(last):,.0f} records, transactions {per_record_us(first):.0f} -> "
        f"{per_record_us(last):.0f} µs a record (first quarter -> last)"
    )
