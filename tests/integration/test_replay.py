"""`booking-sessions replay`: a rebuild reproduces every row and id; a dry run changes nothing; --since/--until,
--offsets and resuming by --group; the live group is never touched."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from booking_sessions.settings import Settings
from booking_sessions.topics import read_topic
from consumer.ids import meeting_link, session_cancelled_id, session_created_id, session_id
from models.records import OutgoingRecord
from producer.bookings import as_record, encode
from tests.conftest import migrated_database
from tests.integration.bookings import START, event
from tests.integration.dead_letters import invalid_record
from tests.integration.harness import Produced, consume_all, query, service, snapshot
from tests.integration.operator_cli import assert_one_line_error, invoke, invoke_json, publish_one_by_one
from tests.servers.ladder import KafkaHandle, PostgresHandle

TANSU_TIMES = "Tansu answers ListOffsets by timestamp with offset 0 whatever the time, so --since/--until cannot work"


@pytest_asyncio.fixture(loop_scope="session")
async def empty_database_url(postgres: PostgresHandle, template_database: str) -> AsyncIterator[str]:
    """A second migrated, empty database: the target of a rebuild."""
    async with migrated_database(postgres, template_database) as url:
        yield url


async def contract_rows(database_url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row a rebuild must reproduce, without the wall-clock columns."""
    return {
        "sessions": await query(
            database_url,
            "SELECT id, booking_request_id, instructor_id, student_id, title, scheduled_start, duration_minutes,"
            " status, meeting_link, snapshot_occurred_at, snapshot_message_id, cancelled_at, cancellation_message_id,"
            " cancellation_reason FROM live_sessions ORDER BY 2",
        ),
        "participants": await query(
            database_url, "SELECT session_id, user_id, role FROM session_participants ORDER BY 1, 2"
        ),
        "reservations": await query(
            database_url, "SELECT session_id, learner_id, status FROM session_reservations ORDER BY 1, 2"
        ),
        "inbox": await query(
            database_url,
            'SELECT message_id, event_type, booking_id, payload_sha256, outcome, dlq_reason, topic, partition, "offset"'
            " FROM inbox_messages ORDER BY message_id",
        ),
    }


async def outbox_ids(database_url: str, kind: str) -> set[str]:
    rows = await query(
        database_url,
        "SELECT message_id FROM outbox_messages WHERE CAST(payload AS jsonb) ->> 'type' = :kind",
        kind=kind,
    )
    return {str(r["message_id"]) for r in rows}


def other_type(topic: str) -> OutgoingRecord:
    body = json.loads(encode(event("BookingConfirmed", "bk_other", 2)))
    body["type"] = "BookingRescheduled"  # a type this build does not know: ignored, recorded in the inbox
    return OutgoingRecord(topic, b"bk_other", json.dumps(body).encode())


async def committed(
    settings: Settings, group_id: str, ends: dict[tuple[str, int], int]
) -> dict[tuple[str, int], int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp: await consumer.committed(TopicPartition(*tp)) for tp in ends}
    finally:
        await consumer.stop()


async def test_rebuild_into_an_empty_database_reproduces_rows_session_ids_links_and_session_created_ids(
    settings: Settings, database_url: str, empty_database_url: str
) -> None:
    bookings = [f"bk_{i}" for i in range(6)]
    first = [event("BookingApproved", b, 0) for b in bookings] + [event("BookingConfirmed", b, 1) for b in bookings[:4]]
    first_records = [as_record(e, settings.input_topic) for e in first]
    extras = [first_records[0], other_type(settings.input_topic), invalid_record(settings.input_topic)]  # a repeat too
    reschedule = event("BookingConfirmed", "bk_0", 5, scheduled_start=START + timedelta(days=1))
    cancellation = event("BookingCancelled", "bk_1", 5, cancellation_reason="ill")
    produced = Produced()
    await publish_one_by_one(settings, [*first_records, *extras], produced)
    later = Produced()
    async with service(settings) as svc:
        await consume_all(svc, produced)
        # A later batch: a SessionUpdated, and a SessionCancelled of an announced session.
        await publish_one_by_one(settings, [reschedule, as_record(cancellation, settings.input_topic)], later)
        await consume_all(svc, later)
        await svc.relay.drain()
    produced.ends.update(later.ends)
    original = await contract_rows(database_url)
    created = await outbox_ids(database_url, "SessionCreated")
    updated = await outbox_ids(database_url, "SessionUpdated")
    cancelled = await outbox_ids(database_url, "SessionCancelled")
    assert len(created) == 6 and len(updated) == 1 and cancelled == {str(session_cancelled_id(session_id("bk_1")))}

    summary = await invoke_json(settings, "replay", "--relay", BOOKING_DATABASE_URL=empty_database_url)

    total = len(first_records) + len(extras) + 2
    assert summary["records"] == total
    assert (summary["applied"], summary["duplicates"], summary["ignored"]) == (total - 3, 1, 1)
    assert summary["dead_lettered"] == {"invalid": 1}
    # bk_1 is rebuilt CANCELLED; announced again (created, then cancelled) only if its batches say so.
    assert summary["sessions_created"] + summary["sessions_cancelled_unannounced"] == 6
    assert summary["sessions_cancelled"] + summary["sessions_cancelled_unannounced"] == 1
    assert summary["outbox_published"] == (
        summary["sessions_created"] + summary["sessions_updated"] + summary["sessions_cancelled"]
    )
    assert summary["outbox_backlog"] == 0
    rebuilt = await contract_rows(empty_database_url)
    assert rebuilt == original
    assert {s["booking_request_id"]: (s["id"], s["meeting_link"]) for s in rebuilt["sessions"]} == {
        b: (session_id(b), meeting_link("https://meet.jit.si", session_id(b), b"test-secret-of-at-least-32-bytes-0000"))
        for b in bookings
    }
    assert await outbox_ids(empty_database_url, "SessionCreated") <= created
    # A SessionUpdated exists only where a batch saw the change; its id is the same when it does.
    assert await outbox_ids(empty_database_url, "SessionUpdated") <= updated
    assert await outbox_ids(empty_database_url, "SessionCancelled") <= cancelled
    # The rebuild's relay sent each SessionCreated again under its one id: the video service drops the copy.
    expected = len(created) + len(updated) + len(cancelled) + summary["outbox_published"]
    out = await read_topic(settings.kafka_bootstrap or "", settings.output_topic, expected=expected)
    assert len(out) == expected
    sent = [json.loads(r.value or b"") for r in out]
    for b in bookings:
        ids = [m["message_id"] for m in sent if m["type"] == "SessionCreated" and m["booking_id"] == b]
        again = 1 if b != "bk_1" or summary["sessions_cancelled"] else 0  # not re-sent: rebuilt already cancelled
        assert ids == [str(session_created_id(session_id(b)))] * (1 + again)
    # The live group's offsets are where the service left them.
    assert await committed(settings, settings.group_id, produced.ends) == produced.ends


async def test_dry_run_counts_what_would_change_and_writes_sends_and_commits_nothing(
    settings: Settings, database_url: str
) -> None:
    applied = [event("BookingApproved", "bk_a", 0), event("BookingApproved", "bk_b", 0)]
    produced = Produced()
    await publish_one_by_one(settings, applied, produced)
    async with service(settings) as svc:
        await consume_all(svc, produced)
    pending = [
        as_record(event("BookingApproved", "bk_c", 0), settings.input_topic),  # new: a SessionCreated
        as_record(event("BookingConfirmed", "bk_a", 3, title="Geometry"), settings.input_topic),  # SessionUpdated
        as_record(applied[0], settings.input_topic),  # a repeat
        invalid_record(settings.input_topic),
    ]
    await publish_one_by_one(settings, pending, produced)
    before = await snapshot(database_url)
    group = f"ops-dry-{uuid.uuid4().hex[:8]}"

    summary = await invoke_json(settings, "replay", "--dry-run", "--group", group)

    assert summary["dry_run"] is True
    assert summary["records"] == 6
    assert (summary["applied"], summary["duplicates"], summary["ignored"]) == (2, 3, 0)
    assert (summary["sessions_created"], summary["sessions_updated"]) == (1, 1)
    assert summary["dead_lettered"] == {"invalid": 1}
    assert await snapshot(database_url) == before
    assert await read_topic(settings.kafka_bootstrap or "", settings.dlq_topic, expected=0, timeout_s=1) == []
    assert set((await committed(settings, group, produced.ends)).values()) == {None}
    text = await invoke(settings, "replay", "--dry-run", "--group", group)
    assert text.exit_code == 0, text.output
    assert "dry run: nothing was written, sent or committed" in text.stdout
    assert "records 6: applied 2, duplicates 3, ignored 0, dead letters 1 (invalid 1)" in text.stdout
    assert "sessions created 1, sessions updated 1 (would be written)" in text.stdout


async def test_a_dry_run_records_no_meeting_key_and_a_mistyped_output_topic_is_refused(
    settings: Settings, database_url: str
) -> None:
    # A dry run with a mistyped secret recorded that secret's fingerprint on a fresh database (before the fix), and
    # `run` with the right one was refused from then on.
    await publish_one_by_one(settings, [event("BookingApproved", "bk_a", 0)])
    mistyped = "a-mistyped-meeting-secret-that-nobody-meant-0123"
    dry = await invoke_json(settings, "replay", "--dry-run", "--group", "ops-dry-key", BOOKING_MEETING_SECRET=mistyped)
    assert (dry["dry_run"], dry["applied"]) == (True, 1)
    assert await query(database_url, "SELECT version FROM meeting_keys") == []

    # The outbox rows a replay writes name the output topic, with or without --relay (before: checked only with it).
    wrong = await invoke(settings, "replay", "--group", "ops-wrong-topic", BOOKING_OUTPUT_TOPIC="session.evnets")
    assert_one_line_error(wrong, "BOOKING_OUTPUT_TOPIC")
    assert await query(database_url, "SELECT message_id FROM inbox_messages") == []
    assert await query(database_url, "SELECT message_id FROM outbox_messages") == []


@pytest.mark.partitions(1)
async def test_replay_from_explicit_offsets(settings: Settings, database_url: str) -> None:
    await publish_one_by_one(settings, [event("BookingApproved", f"bk_{i}", 0) for i in range(5)])

    summary = await invoke_json(settings, "replay", "--offsets", "0:3")

    assert summary["partitions"] == {"0": {"from": 3, "to": 5, "resumed": False, "reached": 5}}
    assert (summary["records"], summary["sessions_created"]) == (2, 2)
    rows = await query(database_url, "SELECT booking_request_id FROM live_sessions ORDER BY 1")
    assert [r["booking_request_id"] for r in rows] == ["bk_3", "bk_4"]
    assert_one_line_error(await invoke(settings, "replay", "--offsets", "7:0"), "partition 7", "partitions 0-0")
    # Started moments after the first, with the default group: a group of its own (it shared the first's when both
    # started within one second, and resumed it: "nothing to replay").
    assert_one_line_error(await invoke(settings, "replay", "--offsets", "0:50"), "offset 50; its end is 5")


async def produce_at(settings: Settings, events: list[Any], at: datetime) -> None:
    """Records stamped with ``at`` (CreateTime), as if the booking service had written them then."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(
                settings.input_topic, encode(e), key=e.booking_id.encode(), timestamp_ms=int(at.timestamp() * 1000)
            )
    finally:
        await producer.stop()


async def test_since_until_then_resume_by_group_continues_where_it_stopped(
    kafka: KafkaHandle, settings: Settings, database_url: str
) -> None:
    if kafka.kind == "tansu":
        pytest.skip(TANSU_TIMES)
    now = datetime.now(UTC).replace(microsecond=0)
    hours = [now - timedelta(hours=3), now - timedelta(hours=2), now - timedelta(hours=1)]
    for phase, at in enumerate(hours):
        await produce_at(settings, [event("BookingApproved", f"bk_{phase}_{i}", 0) for i in range(3)], at)
    group = f"ops-resume-{uuid.uuid4().hex[:8]}"
    since, until = hours[1].isoformat(), hours[2].isoformat()

    first = await invoke_json(settings, "replay", "--since", since, "--until", until, "--group", group)
    assert (first["records"], first["sessions_created"]) == (3, 3)
    rows = await query(database_url, "SELECT booking_request_id FROM live_sessions ORDER BY 1")
    assert [r["booking_request_id"] for r in rows] == ["bk_1_0", "bk_1_1", "bk_1_2"]

    # The same command without --until, same group: every partition resumes at the offset the first one reached.
    second = await invoke_json(settings, "replay", "--since", since, "--group", group)
    assert all(p["resumed"] for p in second["partitions"].values())
    assert (second["records"], second["sessions_created"], second["duplicates"]) == (3, 3, 0)
    rows = await query(database_url, "SELECT booking_request_id FROM live_sessions ORDER BY 1")
    assert [r["booking_request_id"] for r in rows] == [f"bk_{p}_{i}" for p in (1, 2) for i in range(3)]
    ends = {(settings.input_topic, int(p)): s["to"] for p, s in second["partitions"].items()}
    assert await committed(settings, group, ends) == ends
    assert set((await committed(settings, settings.group_id, ends)).values()) == {None}  # live group untouched
