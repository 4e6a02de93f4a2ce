"""The pure decisions of the operators' commands: where a replay starts and stops, what a DLQ replay does."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from booking_sessions.ops.arguments import ArgumentError
from booking_sessions.ops.dlq import DeadLetter, DlqFilter
from booking_sessions.ops.dlq_replay import InboxRow, plan, replayed_record
from booking_sessions.ops.replay import Span, plan_spans
from booking_sessions.ops.status import PartitionLag
from models.records import Headers

AT = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
PARTITIONS = [0, 1, 2]
BEGINNING = {0: 0, 1: 5, 2: 0}
END = {0: 10, 1: 20, 2: 0}
NOTHING = {0: None, 1: None, 2: None}


def test_by_default_every_partition_from_its_beginning_to_its_end() -> None:
    assert plan_spans(PARTITIONS, BEGINNING, END, NOTHING) == {0: Span(0, 10), 1: Span(5, 20), 2: Span(0, 0)}


def test_since_and_until_pick_offsets_and_none_means_no_such_record() -> None:
    spans = plan_spans(
        PARTITIONS, BEGINNING, END, NOTHING, since={0: 4, 1: None, 2: None}, until={0: 8, 1: 12, 2: None}
    )
    assert spans == {0: Span(4, 8), 1: Span(20, 20), 2: Span(0, 0)}


def test_committed_offsets_of_the_replay_group_resume_it() -> None:
    spans = plan_spans(PARTITIONS, BEGINNING, END, {0: 7, 1: None, 2: None}, since={0: 2, 1: 6, 2: None})
    assert spans == {0: Span(7, 10, resumed=True), 1: Span(6, 20), 2: Span(0, 0)}


def test_explicit_offsets_replay_only_their_partitions_and_never_before_the_beginning() -> None:
    assert plan_spans(PARTITIONS, BEGINNING, END, NOTHING, explicit={1: 2, 0: 10}) == {0: Span(10, 10), 1: Span(5, 20)}
    with pytest.raises(ArgumentError, match="partition 7; the topic has partitions 0-2"):
        plan_spans(PARTITIONS, BEGINNING, END, NOTHING, explicit={7: 0})


def test_an_explicit_start_past_the_end_is_refused_unless_the_replay_group_resumes() -> None:
    # Before: `replay --offsets 0:999999999` said "nothing to replay" and exited 0, hiding the typo.
    with pytest.raises(ArgumentError, match=r"past the end of partition 0 \(offset 30; its end is 10\)"):
        plan_spans(PARTITIONS, BEGINNING, END, NOTHING, explicit={1: 2, 0: 30})
    resumed = plan_spans(PARTITIONS, BEGINNING, END, {0: 10, 1: None, 2: None}, explicit={0: 30})
    assert resumed == {0: Span(10, 10, resumed=True)}


def letter(offset: int, reason: str, body: object, key: bytes | None = b"bk_1", headers: Headers = ()) -> DeadLetter:
    value = json.dumps(body).encode() if not isinstance(body, bytes) else body
    added = (("dlq-reason", reason.encode()), ("dlq-failed-at", b"2026-11-24T10:00:00Z"))
    return DeadLetter(0, offset, AT, key, value, headers + added)


def test_dead_letter_reads_its_headers_and_message_id() -> None:
    mid = uuid.uuid4()
    ours = (("dlq-reason", b"invalid"), ("dlq-source-topic", b"booking.events"), ("dlq-source-partition", b"3"))
    value = json.dumps({"message_id": str(mid)}).encode()
    dead = DeadLetter(
        0, 4, AT, b"bk_1", value, (("traceparent", b"00-ab"), *ours, ("dlq-failed-at", b"2026-11-24T10:00:00Z"))
    )
    assert (dead.reason, dead.message_id, dead.position, dead.failed_at) == ("invalid", mid, "0:4", AT)
    assert dead.source == "booking.events/3/?"
    assert dead.original_headers() == (("traceparent", b"00-ab"),)
    assert letter(5, "invalid", b"\xff not json").message_id is None
    assert letter(6, "invalid", ["a list"]).message_id is None


def test_original_headers_keep_the_records_own_dlq_headers_and_drop_what_this_service_added() -> None:
    # The record came with a dlq-reason of its own (another system's, or forged), and was replayed once before:
    # its copy holds its headers, the markers of that replay, then this service's block.
    own = (("traceparent", b"00-ab"), ("dlq-reason", b"theirs"), ("dlq-note", None))
    markers = (("dlq-replayed-at", b"2026-11-24T09:00:00Z"), ("dlq-replayed-from", b"booking.events.dlq/0/1"))
    ours = (("dlq-reason", b"invalid"), ("dlq-error", b"x"), ("dlq-failed-at", b"2026-11-24T10:00:00Z"))
    dead = DeadLetter(0, 9, AT, b"bk_1", b"{}", own + markers + ours)

    assert dead.original_headers() == own  # before: every dlq-* header removed, the record's own ones too
    assert dead.reason == "invalid"  # the last dlq-reason is this service's
    not_ours = DeadLetter(0, 9, AT, b"bk_1", b"{}", (("a", b"1"), ("dlq-x", b"2")))
    assert not_ours.original_headers() == (("a", b"1"),)


def test_filter() -> None:
    dead = letter(4, "too_large", {})
    assert DlqFilter().empty and DlqFilter().matches(dead)
    assert DlqFilter(reasons=frozenset({"too_large"})).matches(dead)
    assert not DlqFilter(reasons=frozenset({"invalid"})).matches(dead)
    assert DlqFilter(positions=frozenset({(0, 4)})).matches(dead)
    assert not DlqFilter(since=datetime(2026, 11, 25, tzinfo=UTC)).matches(dead)
    assert not DlqFilter(until=AT).matches(dead) and DlqFilter(since=AT).matches(dead)


def test_replay_plan_per_inbox_state() -> None:
    ids = [uuid.uuid4() for _ in range(6)]
    letters = [
        letter(0, "processing_error", {"message_id": str(ids[0])}),  # dead_lettered row: reset, replay
        letter(1, "too_large", {"message_id": str(ids[1])}),  # never recorded: replay
        letter(2, "invalid", {"message_id": str(ids[2])}),  # applied since (an earlier replay): skip
        letter(3, "message_id_conflict", {"message_id": str(ids[3])}),  # never
        letter(4, "invalid", {"message_id": str(ids[4])}),  # the inbox has it with another payload: skip
        letter(5, "processing_error", {"message_id": str(ids[0])}),  # the same message dead-lettered again
        letter(6, "invalid", b"not json"),  # no id: replay
    ]
    inbox = {
        ids[0]: InboxRow("dead_lettered", letters[0].payload_sha256),
        ids[2]: InboxRow("applied", letters[2].payload_sha256),
        ids[3]: InboxRow("applied", "0" * 64),
        ids[4]: InboxRow("dead_lettered", "f" * 64),
    }
    steps = plan(letters, inbox)
    assert [(s.action, s.reset_inbox) for s in steps] == [
        ("replay", True),
        ("replay", False),
        ("skip", False),
        ("skip", False),
        ("skip", False),
        ("skip", False),
        ("replay", False),
    ]
    assert "already applied" in steps[2].note and "same message as 0:0" in steps[5].note


def test_replayed_record_keeps_key_value_and_original_headers() -> None:
    dead = letter(9, "invalid", {"a": 1}, headers=(("traceparent", b"00-ab"), ("empty", b"")))
    record = replayed_record(dead, "booking.events", "booking.events.dlq", AT)
    assert (record.topic, record.key, record.value) == ("booking.events", dead.key, dead.value)
    assert record.headers == (
        ("traceparent", b"00-ab"),
        ("empty", b""),
        ("dlq-replayed-at", b"2026-11-24T10:00:00Z"),
        ("dlq-replayed-from", b"booking.events.dlq/0/9"),
    )


def test_lag_counts_from_the_beginning_when_nothing_was_committed() -> None:
    assert PartitionLag(0, None, 5, 12).lag == 7
    assert PartitionLag(0, 10, 5, 12).lag == 2
    assert PartitionLag(0, 2, 5, 12).lag == 7  # committed offset removed by retention


def test_a_dead_letter_whose_value_was_left_out_is_not_replayed_from_the_dlq() -> None:
    omitted = (
        ("dlq-source-topic", b"booking.events"),
        ("dlq-source-partition", b"3"),
        ("dlq-source-offset", b"41"),
        ("dlq-value-omitted", b"1048400"),
        ("dlq-value-sha256", b"ab" * 32),
    )
    dead = DeadLetter(0, 7, AT, b"bk_1", None, (("null", None), ("dlq-reason", b"too_large"), *omitted))

    [step] = plan([dead], {})

    assert step.action == "skip"
    assert step.note == (
        "not replayable from the DLQ: its value (1048400 bytes) was left out; it is at booking.events/3/41"
    )
    assert dead.original_headers() == (("null", None),)


@pytest.mark.parametrize(
    ("timestamp_ms", "expected"),
    [
        (1_764_000_000_000, datetime(2025, 11, 24, 16, 0, tzinfo=UTC)),
        (2**63 - 1, datetime.min.replace(tzinfo=UTC)),
        (-(2**63), datetime.min.replace(tzinfo=UTC)),
    ],
)
def test_a_dead_letter_with_any_kafka_timestamp_reads(timestamp_ms: int, expected: datetime) -> None:
    from aiokafka import ConsumerRecord

    from booking_sessions.ops.dlq import from_record

    record = ConsumerRecord("dlq", 0, 1, timestamp_ms, 0, b"k", b"v", None, 1, 1, (("null", None),))

    assert from_record(record).timestamp == expected


def test_a_replay_whose_group_had_finished_says_so_and_how_to_read_again() -> None:
    # A newcomer's find: `replay --group g` into a new, empty database, with g already at every end offset, said
    # only "12 partition(s) with nothing to replay": a trap for a rebuild.
    from rich.console import Console

    from booking_sessions.ops.replay import ReplaySummary
    from booking_sessions.ops.reports import replay_report

    spans = plan_spans(PARTITIONS, BEGINNING, END, {0: 10, 1: 20, 2: None})
    console = Console(width=200, record=True)
    for part in replay_report(ReplaySummary("booking.events", "rebuild-1", False, spans)):
        console.print(part)
    text = console.export_text()

    assert "3 partition(s) with nothing to replay" in text
    assert "2 of them: group rebuild-1 had committed up to their end already" in text
    assert "use a new --group" in text


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(lambda v: b"\xef\xbb\xbf" + v, id="byte-order-mark"),
        pytest.param(lambda v: v.replace(b'"TITLE"', b'"a\xffb"'), id="not-utf8-in-a-string"),
        pytest.param(lambda v: v.replace(b'"TITLE"', b'"a\nb"'), id="raw-newline-in-a-string"),
    ],
)
def test_a_dead_letter_no_strict_parser_reads_is_found_under_the_id_its_inbox_row_has(raw: Any) -> None:
    # The consumer records such a dead letter under its readable message id; `dlq replay` must find that row and
    # reset it, or the replayed copy is dropped as a duplicate of it instead of being judged again.
    mid = uuid.uuid4()
    value = raw(json.dumps({"message_id": str(mid), "type": "BookingConfirmed", "title": "TITLE"}).encode())
    dead = letter(4, "invalid", value)

    assert dead.message_id == mid
    [step] = plan([dead], {mid: InboxRow("dead_lettered", dead.payload_sha256)})
    assert (step.action, step.reset_inbox) == ("replay", True)
