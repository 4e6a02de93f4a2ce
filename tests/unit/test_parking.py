"""Parking a booking locked elsewhere (consumer/parking.py): the offsets a batch with parked records may commit,
the records left to apply, the batch fetched ahead trimmed after a seek back, and what the health check says."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from booking_sessions.observe.health import Observed, assess
from booking_sessions.observe.metrics import Metrics
from consumer.parking import Hold, bookings_of, held_offsets, hold_back, without
from consumer.results import Prepared, offsets_after
from models.records import Decoded, Record

TOPIC = "booking.events"


def decoded(partition: int, offset: int, booking_id: str | None) -> Decoded:
    record = Record(TOPIC, partition, offset, None, b"{}")
    return Decoded(record, "0" * 64, None, "BookingConfirmed", booking_id, "applied")


def test_a_partition_commits_up_to_its_first_parked_record_the_others_past_their_last() -> None:
    batch = [decoded(0, 10, "a"), decoded(0, 11, "locked"), decoded(1, 5, "b"), decoded(0, 12, "c")]
    batch += [decoded(0, 13, "locked"), decoded(2, 7, "locked"), decoded(1, 6, "d")]
    parked = [d.record for d in batch if d.booking_id == "locked"]
    held = held_offsets(parked)
    assert held == {(TOPIC, 0): 11, (TOPIC, 2): 7}
    offsets = hold_back(offsets_after(d.record for d in batch), held)
    assert offsets == {(TOPIC, 0): 11, (TOPIC, 1): 7, (TOPIC, 2): 7}


def test_nothing_parked_commits_past_every_last_record() -> None:
    batch = [decoded(0, 10, "a"), decoded(1, 5, "b")]
    assert hold_back(offsets_after(d.record for d in batch), {}) == {(TOPIC, 0): 11, (TOPIC, 1): 6}


RECORDS = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from(["a", "b", "c", "locked", None])), min_size=1, max_size=60
)


@given(RECORDS, st.sets(st.sampled_from(["a", "b", "c", "locked"]), max_size=2))
def test_never_past_a_parked_record_and_never_behind_an_applied_prefix(
    shape: list[tuple[int, str | None]], locked: set[str]
) -> None:
    batch = [decoded(partition, offset, booking) for offset, (partition, booking) in enumerate(shape)]
    kept = without(batch, locked)
    parked = [d for d in batch if d not in kept]
    assert bookings_of(parked) == bookings_of(batch) & locked and not bookings_of(kept) & locked
    assert [d for d in batch if d in kept] == kept  # the order of the batch
    offsets = hold_back(offsets_after(d.record for d in batch), held_offsets(d.record for d in parked))
    for d in parked:
        assert offsets[(TOPIC, d.record.partition)] <= d.record.offset  # it comes again
    for partition, next_offset in offsets.items():
        # Everything of the partition before the commit point was applied.
        before = [d for d in batch if (TOPIC, d.record.partition) == partition and d.record.offset < next_offset]
        assert all(d in kept for d in before)
        assert before or next_offset == min(d.record.offset for d in parked if d.record.partition == partition[1])


def test_the_batch_fetched_ahead_loses_what_a_seek_back_delivers_again() -> None:
    records = [Record(TOPIC, p, o, None, b"{}") for p, o in [(0, 20), (1, 8), (0, 21), (2, 3)]]
    seen_one = Prepared(records, 1, [decoded(0, 20, "a"), decoded(0, 21, "b"), decoded(2, 3, "c")], 0.5, 0.1)
    held = {(TOPIC, 0): 11}
    kept = seen_one.without(lambda r: r.offset >= held.get((r.topic, r.partition), r.offset + 1))
    assert [(r.partition, r.offset) for r in kept.records] == [(1, 8), (2, 3)]
    assert [d.record.offset for d in kept.decoded] == [3]
    assert kept.seen == 1  # the record known to the inbox (partition 1) is still counted as one


def observed_held(held_s: float, **changes: object) -> Observed:
    values: dict[str, object] = {
        "now": 1000.0,
        "lag": 40,
        "consumer_progress_at": 999.0,
        "consumer_error": None,
        "outbox_rows": 0,
        "relay_progress_at": 999.0,
        "relay_error": None,
        "database_ok_at": 999.0,
        "database_error": None,
        "kafka_ok_at": 999.0,
        "kafka_error": None,
        "group": {"ok": True, "state": "assigned"},
        "held": {f"{TOPIC}/3": Hold(11, frozenset({"bk_7"}), 1000.0 - held_s, 0.4, 1000.3)},
    }
    return Observed(**(values | changes))  # type: ignore[arg-type]


def test_a_held_partition_is_shown_then_not_ready_but_alive_and_names_the_lock() -> None:
    """All the lag is the held partition's, and nothing else to do for minutes: no stall, the lock is named."""
    early = assess(observed_held(5.0, held_lag=40, consumer_progress_at=0.0), stall_after_s=120.0, stale_after_s=10.0)
    assert early.ready and early.alive
    assert early.readiness["checks"]["consumer"]["held"] == {
        f"{TOPIC}/3": {"offset": 11, "bookings": ["bk_7"], "held_s": 5.0}
    }
    late = assess(observed_held(130.0, held_lag=40, consumer_progress_at=0.0), stall_after_s=120.0, stale_after_s=10.0)
    consumer = late.readiness["checks"]["consumer"]
    assert not late.ready and late.alive  # a restart would not free the lock, and would cost a rebalance
    assert consumer["ok"] is False and "bk_7" in consumer["why"] and "55P03" in consumer["why"]
    assert f"{TOPIC}/3" in consumer["why"]


def test_a_real_stall_keeps_its_own_reason_while_a_partition_is_held() -> None:
    """Lag outside the held partition and no batch committed: a stall, said as such."""
    seen = observed_held(300.0, held_lag=10, consumer_progress_at=500.0)
    verdict = assess(seen, stall_after_s=120.0, stale_after_s=10.0)
    assert not verdict.alive
    assert verdict.readiness["checks"]["consumer"]["why"].startswith("30 waiting, no progress")


def test_a_released_hold_counts_as_progress_and_the_gauges_follow() -> None:
    metrics = Metrics()
    hold = Hold(11, frozenset({"bk_7"}), 0.0, 0.4, 0.4)
    metrics.consumer_progress_at = 0.0
    metrics.holds_changed(1, {f"{TOPIC}/3": hold})
    assert metrics.consumer_progress_at == 0.0  # parking is no progress
    sample = metrics.registry.get_sample_value
    assert sample("booking_sessions_held_partitions") == 1 and sample("booking_sessions_bookings_parked_total") == 1
    metrics.holds_changed(0, {})
    assert metrics.consumer_progress_at > 0.0 and sample("booking_sessions_held_partitions") == 0
