"""The bench's workload and latency arithmetic: pure, deterministic, no servers."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from bench.latency import commit_latencies_s, percentile
from bench.service_path import Committed
from bench.workload import BenchRecord, Workload, generate
from consumer.decode import decode
from models.events import BookingEvent
from models.records import Record

EVENTS = 4_000


@pytest.fixture(scope="module")
def workload() -> Workload:
    return generate(EVENTS, seed=11)


def events_of(records: list[BenchRecord] | tuple[BenchRecord, ...]) -> list[BookingEvent]:
    return [BookingEvent.model_validate_json(r.value) for r in records]


def test_counts(workload: Workload) -> None:
    counts = workload.counts
    assert workload.events == EVENTS
    assert workload.bookings == EVENTS // 10
    assert counts["approved"] == counts["confirmed"] == workload.bookings
    assert counts["redelivered"] == EVENTS * 5 // 100
    assert counts["cancelled"] == workload.cancelled_bookings == EVENTS * 5 // 100
    assert counts["rescheduled"] > 0 and counts["reconfirmed"] > counts["rescheduled"]
    assert workload.unique_message_ids == EVENTS - counts["redelivered"]
    assert len({BookingEvent.model_validate_json(r.value).message_id for r in workload.records}) == (
        workload.unique_message_ids
    )


def test_every_record_is_a_contract_valid_event_keyed_by_its_booking(workload: Workload) -> None:
    for offset, r in enumerate(workload.records):
        decoded = decode(Record("t", 0, offset, r.key, r.value), 64 * 1024)
        assert decoded.outcome == "applied", decoded.error
        assert decoded.booking_id == r.key.decode() == workload.booking_id(r.booking)
    sizes = [len(r.value) for r in workload.records]
    assert 360 <= sum(sizes) / len(sizes) <= 400  # the reference workload's ~380 bytes


def test_half_the_bookings_are_cancelled_once_after_their_approval_and_confirmation(workload: Workload) -> None:
    seen: dict[int, list[str]] = {}
    for r in workload.records:
        if r.kind != "redelivered":
            seen.setdefault(r.booking, []).append(r.kind)
    cancelled = {b for b, kinds in seen.items() if "cancelled" in kinds}
    assert len(cancelled) == workload.cancelled_bookings == workload.bookings // 2
    for b in cancelled:
        assert seen[b].count("cancelled") == 1 and seen[b].index("cancelled") >= 2
    events = events_of([r for r in workload.records if r.kind == "cancelled"])
    assert {(e.type, e.cancellation_reason) for e in events} == {("BookingCancelled", "the student cancelled")}
    some_newer_after = sum(1 for b in cancelled if seen[b][-1] != "cancelled")
    assert some_newer_after > 0  # snapshots newer than the cancellation: the rows follow, nothing is announced


def test_redeliveries_are_exact_copies_placed_after_their_original(workload: Workload) -> None:
    first_at: dict[bytes, int] = {}
    for i, r in enumerate(workload.records):
        if r.kind == "redelivered":
            assert r.value in first_at, "a redelivery precedes its original"
            assert first_at[r.value] < i
        else:
            assert r.value not in first_at, "an original appears twice"
            first_at[r.value] = i


def test_reschedules_change_the_start_and_move_forward_in_time(workload: Workload) -> None:
    by_booking: dict[int, list[BenchRecord]] = {}
    for r in workload.records:
        if r.kind != "redelivered":
            by_booking.setdefault(r.booking, []).append(r)
    starts_changed = 0
    for records in by_booking.values():
        events = events_of(records)
        kinds = [r.kind for r in records]
        assert sorted(kinds[:2]) == ["approved", "confirmed"]
        later = events[2:]
        assert all(a.occurred_at < b.occurred_at for a, b in itertools.pairwise(later))
        for previous, kind, event in zip(events[1:-1], kinds[2:], later, strict=True):
            moved = event.booking.scheduled_start != previous.booking.scheduled_start
            assert moved == (kind == "rescheduled")
            starts_changed += moved
    assert starts_changed == workload.counts["rescheduled"]


def test_bookings_interleave_across_the_stream(workload: Workload) -> None:
    first_half = {r.booking for r in workload.records[: EVENTS // 2]}
    second_half = {r.booking for r in workload.records[EVENTS // 2 :]}
    assert len(first_half & second_half) > workload.bookings // 4
    window = workload.records[:200]
    assert max(Counter(r.booking for r in window).values()) < 20


def test_deterministic_per_seed() -> None:
    assert generate(500, seed=3) == generate(500, seed=3)
    assert generate(500, seed=3).records != generate(500, seed=4).records
    assert generate(500, prefix="lt").records[0].key.startswith(b"lt_")


def test_a_sample_keeps_whole_bookings() -> None:
    workload = generate(2_000)
    sample = workload.sample(4)
    assert sample.bookings == 50
    assert {r.booking % 4 for r in sample.records} == {0}
    assert sample.events == sum(1 for r in workload.records if r.booking % 4 == 0)
    assert sample.counts["approved"] == sample.counts["confirmed"] == sample.bookings


def test_too_few_events_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 20"):
        generate(19)


def committed(at: float, offsets: dict[int, int]) -> Committed:
    return Committed(0, at, {("t", p): o for p, o in offsets.items()}, 1, 0, 0, 0, 0, 0.0, 0.0)


def test_latency_is_the_first_commit_past_each_record() -> None:
    sent_at = {0: {0: 1.0, 1: 1.5, 2: 2.0}, 1: {0: 1.0}}
    batches = [committed(3.0, {0: 2}), committed(2.5, {1: 1}), committed(4.0, {0: 3, 1: 1})]
    assert sorted(commit_latencies_s("t", sent_at, batches)) == [1.5, 1.5, 2.0, 2.0]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0
    assert percentile([], 99) == 0.0
