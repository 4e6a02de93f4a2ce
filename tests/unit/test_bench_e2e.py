"""The end-to-end and peer arithmetic of the bench: which records create sessions, when each was sent, what the
output topic says was announced. Pure: no servers."""

from __future__ import annotations

import json

import pytest
from aiokafka import ConsumerRecord
from aiokafka.partitioner import DefaultPartitioner

from bench.databases import Rows
from bench.e2e import creating_records, filling_records
from bench.latency import (
    batch_trend,
    commit_latencies_s,
    created_latencies_s,
    created_split,
    first_sent_at,
    latency_split,
    p99_by_second,
)
from bench.peer_checks import announced, topic_rows
from bench.service_path import Committed
from bench.workload import generate


def test_creating_records_are_each_bookings_first_in_stream_order() -> None:
    workload = generate(2_000, seed=3)
    firsts = creating_records(workload.records, 50)
    assert len(firsts) == 50
    assert len({r.booking for r in firsts}) == 50
    for r in firsts:
        earlier = next(x for x in workload.records if x.booking == r.booking)
        assert earlier is r
        assert r.kind in ("approved", "confirmed")  # a booking never starts with its cancellation
    positions = [workload.records.index(r) for r in firsts]
    assert positions == sorted(positions)


def test_filling_records_give_each_partition_its_share_of_creating_records() -> None:
    workload = generate(6_000, seed=5)
    fill = filling_records(workload.records, 12, 20)
    partitioner = DefaultPartitioner()
    every = list(range(12))
    placed = [partitioner(r.key, every, every) for r in fill]  # where the producer puts them
    assert sorted(placed.count(p) for p in every) == [20] * 12
    assert fill == [r for r in creating_records(workload.records, 600) if r in fill]  # creating, in stream order


def test_filling_records_stop_short_when_the_records_run_out() -> None:
    workload = generate(100, seed=5)  # ten bookings: not 20 for each of 12 partitions
    fill = filling_records(workload.records, 12, 20)
    assert fill == creating_records(workload.records, 100)


def test_first_sent_at_keeps_each_bookings_first_due_time() -> None:
    sent = first_sent_at(["a", "b", "a", "c", "b"], started=100.0, rate_per_s=10.0)
    assert sent == {"a": 100.0, "b": 100.1, "c": 100.3}


def committed(at: float, records: int, database_s: float) -> Committed:
    return Committed(0, at, {}, records, 0, 0, 0, 0, 0.0, database_s)


def test_batch_trend_compares_the_first_quarter_of_a_run_with_the_last() -> None:
    # Ten batches over 9 s: the first three (at 0, 1, 2 s) hold 100 records in 10 ms, the last three (7, 8, 9 s)
    # 400 in 20 ms; those between do not count.
    batches = [committed(float(t), 100, 0.010) for t in range(3)]
    batches += [committed(float(t), 250, 0.5) for t in range(3, 7)]
    batches += [committed(float(t), 400, 0.020) for t in range(7, 10)]
    trend = batch_trend(list(reversed(batches)))  # in commit order whatever order they came in
    assert trend == "batches 100 -> 400 records, transactions 100 -> 50 µs a record (first quarter -> last)"


def test_batch_trend_says_nothing_of_a_handful_of_batches() -> None:
    assert batch_trend([committed(float(t), 100, 0.01) for t in range(7)]) == ""


def test_latency_split_says_where_each_records_time_went() -> None:
    # Partition 0: offsets 0-1 sent at 0.00 s and 0.05 s, committed by the batch whose apply began at 0.10 s
    # (its transactions 0.04 s, committed at 0.16 s); offset 2 sent at 0.12 s, by the next one (apply from 0.20 s,
    # 0.06 s of transactions, committed at 0.30 s). Another topic's offsets do not count.
    sent = {0: {0: 0.00, 1: 0.05, 2: 0.12}}
    first = Committed(0, 0.16, {("t", 0): 2, ("u", 0): 9}, 2, 0, 0, 0, 0, 0.0, 0.04, 0.06)
    second = Committed(0, 0.30, {("t", 0): 3}, 1, 0, 0, 0, 0, 0.0, 0.06, 0.10)
    assert [round(s, 3) for s in commit_latencies_s("t", sent, [second, first])] == [0.16, 0.11, 0.18]
    assert latency_split("t", sent, [second, first]) == (
        "a record's p50/p99: to its batch's start 80/100 ms, its batch's transactions 40/60 ms, "
        "then to the commit 20/40 ms"
    )


def test_latency_split_says_nothing_without_the_batches_apply_times() -> None:
    older = Committed(0, 0.16, {("t", 0): 1}, 1, 0, 0, 0, 0, 0.0, 0.04)  # total_s 0: a service that does not say
    assert latency_split("t", {0: {0: 0.0}}, [older]) == ""
    assert latency_split("t", {0: {0: 0.0}}, []) == ""


def test_created_split_says_how_long_each_session_took_to_its_transactions_end_and_then_to_be_read() -> None:
    # As above: bk_a created by offset 0 (sent at 0.00 s), bk_b by offset 2 (0.12 s); offset 1 created nothing.
    # The first batch's transactions ended at 0.16 - 0.06 + 0.04 = 0.14 s, the second's at 0.30 - 0.10 + 0.06 =
    # 0.26 s; bk_a's SessionCreated was read at 0.19 s, bk_b's at 0.33 s, bk_c's never (left out).
    sent = {0: {0: 0.00, 1: 0.05, 2: 0.12}}
    first = Committed(0, 0.16, {("t", 0): 2}, 2, 0, 0, 0, 0, 0.0, 0.04, 0.06)
    second = Committed(0, 0.30, {("t", 0): 3}, 1, 0, 0, 0, 0, 0.0, 0.06, 0.10)
    creating = {"bk_a": (0, 0), "bk_b": (0, 2), "bk_c": (0, 1)}
    seen = {"bk_a": 0.19, "bk_b": 0.33}
    assert created_split("t", creating, sent, seen, [second, first]) == (
        "a session's p50/p99: to its batch's transactions' end 140/140 ms, then to readable (the relay, the "
        "watcher) 50/70 ms"
    )
    older = Committed(0, 0.16, {("t", 0): 3}, 3, 0, 0, 0, 0, 0.0, 0.04)  # total_s 0: a service that does not say
    assert created_split("t", creating, sent, seen, [older]) == ""
    assert created_split("t", creating, sent, {}, [second, first]) == ""


def test_p99_by_second_groups_sessions_by_the_second_their_event_was_sent() -> None:
    sent = {"a": 100.2, "b": 100.9, "c": 101.5, "d": 103.0, "never_seen": 100.1}
    seen = {"a": 100.3, "b": 101.4, "c": 101.55, "d": 103.25}
    assert p99_by_second(sent, seen, started=100.0) == "500, 50, 250"  # seconds 0, 1 and 3; none sent in 2
    assert p99_by_second(sent, {}, started=100.0) == ""


def test_created_latencies_match_by_booking_and_skip_the_unseen() -> None:
    sent = {"a": 1.0, "b": 2.0, "c": 3.0}
    seen = {"b": 2.25, "a": 1.5}
    assert sorted(created_latencies_s(sent, seen)) == [0.25, 0.5]


def test_a_session_created_for_a_booking_never_sent_is_a_bench_error() -> None:
    with pytest.raises(KeyError):
        created_latencies_s({"a": 1.0}, {"z": 2.0})


def record(kind: str, message_id: str, booking: str, offset: int = 0) -> ConsumerRecord[bytes, bytes]:
    value = json.dumps({"message_id": message_id, "type": kind, "booking_id": booking}).encode()
    return ConsumerRecord("out", 0, offset, 0, 0, booking.encode(), value, None, 0, len(value), [])


def test_announced_counts_distinct_ids_per_type() -> None:
    published = [
        record("SessionCreated", "c1", "bk_1"),
        record("SessionCreated", "c1", "bk_1", 1),  # a re-sent copy
        record("SessionUpdated", "u1", "bk_1", 2),
        record("SessionCreated", "c2", "bk_2", 3),
        record("SessionCancelled", "x2", "bk_2", 4),
    ]
    seen = announced(published)
    assert (len(seen["SessionCreated"]), len(seen["SessionUpdated"]), len(seen["SessionCancelled"])) == (2, 1, 1)
    assert seen["keys"] == {"bk_1", "bk_2"}


def test_topic_rows_take_the_announcements_from_the_topic() -> None:
    counted = Rows(
        inbox=10,
        sessions=3,
        participants=3,
        reservations=3,
        session_created=0,
        session_updated=0,
        unpublished=0,
        cancelled=2,
        unannounced=2,  # from outbox_messages, which the peer leaves empty
        reservations_cancelled=2,
    )
    published = [record("SessionCreated", "c1", "bk_1"), record("SessionCancelled", "x1", "bk_1", 1)]
    rows = topic_rows(counted, published, cancelled=["bk_1", "bk_3"])
    assert (rows.session_created, rows.session_updated, rows.session_cancelled) == (1, 0, 1)
    assert rows.unannounced == 1  # bk_3 was cancelled before anything about it was published
    assert rows.outbox == 2
    assert (rows.inbox, rows.sessions, rows.unpublished) == (10, 3, 0)
