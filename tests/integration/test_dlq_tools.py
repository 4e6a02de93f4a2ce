"""`booking-sessions dlq list` and `dlq replay`: every reason listed and filtered; a dead letter replayed after a
fix applies exactly once, however often it is replayed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from booking_sessions.settings import Settings
from booking_sessions.topics import ensure_topics, partitions_of, read_topic
from models.records import OutgoingRecord
from producer.bookings import as_record, encode
from tests.integration.bookings import event
from tests.integration.dead_letters import (
    ORIGINAL_HEADERS,
    TANSU_DLQ_END,
    invalid,
    key_mismatch,
    too_large,
    unsupported_version,
    with_headers,
)
from tests.integration.harness import Produced, consume_all, execute, query, service
from tests.integration.operator_cli import assert_one_line_error, invoke, invoke_json, publish_one_by_one
from tests.servers.ladder import KafkaHandle


async def moved_since(settings: Settings, topic: str, before: Produced) -> Produced:
    """The partitions whose end offset moved past ``before``: what a consumer of the group has left to read."""
    assert settings.kafka_bootstrap is not None
    partitions = await partitions_of(settings.kafka_bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    moved = {(tp.topic, tp.partition): end for tp, end in ends.items()}
    return Produced({tp: end for tp, end in moved.items() if end > before.ends.get(tp, 0)})


@pytest.mark.partitions(1)
async def test_dlq_list_shows_each_dead_letter_and_filters_them_and_replay_plans_per_reason(
    kafka: KafkaHandle, settings: Settings, database_url: str
) -> None:
    if kafka.kind == "tansu":
        pytest.skip(TANSU_DLQ_END)
    topic = settings.input_topic
    applied = event("BookingApproved", "bk_ok", 0)
    conflict = json.loads(encode(applied))
    conflict["booking"]["title"] = "Another payload, same message id"
    records = [
        as_record(applied, topic),
        with_headers(invalid(topic)[0]),
        *unsupported_version(topic),
        *key_mismatch(topic),
        *too_large(topic),
        OutgoingRecord(topic, b"bk_ok", json.dumps(conflict).encode()),
    ]
    produced = Produced()
    await publish_one_by_one(settings, records, produced)
    async with service(settings) as svc:
        await consume_all(svc, produced)

    listed = await invoke_json(settings, "dlq", "list")
    assert (listed["scanned"], listed["matched"]) == (5, 5)
    by_reason = {d["reason"]: d for d in listed["dead_letters"]}
    assert list(by_reason) == ["invalid", "unsupported_version", "key_mismatch", "too_large", "message_id_conflict"]
    assert [d["source"] for d in listed["dead_letters"]] == [f"{topic}/0/{o}" for o in range(1, 6)]
    assert [d["offset"] for d in listed["dead_letters"]] == list(range(5))
    assert by_reason["key_mismatch"]["key"] == "bk_other"
    assert "duration_minutes" in by_reason["invalid"]["error"]
    assert by_reason["message_id_conflict"]["message_id"] == str(applied.message_id)

    some = await invoke_json(settings, "dlq", "list", "--reason", "too_large", "--reason", "key_mismatch")
    assert [d["reason"] for d in some["dead_letters"]] == ["key_mismatch", "too_large"]
    assert (await invoke_json(settings, "dlq", "list", "--since", "1h"))["matched"] == 5
    assert (await invoke_json(settings, "dlq", "list", "--until", "1h"))["matched"] == 0
    last = await invoke_json(settings, "dlq", "list", "--limit", "2")
    assert (last["matched"], [d["offset"] for d in last["dead_letters"]]) == (5, [3, 4])

    table = await invoke(settings, "dlq", "list")
    assert table.exit_code == 0, table.output
    header = table.stdout.splitlines()[1]
    assert all(column in header for column in ("dlq", "reason", "error", "source", "key", "failed at")), header
    assert f"{topic}/0/4" in table.stdout and "5 of 5 dead letters match" in table.stdout

    before = await query(database_url, "SELECT message_id, outcome FROM inbox_messages ORDER BY 1")
    plan = await invoke(settings, "dlq", "replay", "--all", "--dry-run")
    assert plan.exit_code == 0, plan.output
    cells = [[c.strip() for c in line.split("│")] for line in plan.stdout.splitlines() if "│ 0:" in line]
    rows = {c[2]: " ".join(c) for c in cells}
    assert "reset, then replayed" in rows["invalid"] and "reset, then replayed" in rows["key_mismatch"]
    assert "reset, then replayed" in rows["unsupported_version"]
    assert "not in the inbox" in rows["too_large"]  # never parsed, never recorded
    assert "not replayable" in rows["message_id_conflict"]
    assert f"dry run: would replay 4 to {topic} (resetting 3 dead_lettered inbox rows), skip 1" in plan.stdout
    assert await query(database_url, "SELECT message_id, outcome FROM inbox_messages ORDER BY 1") == before
    assert len(await read_topic(settings.kafka_bootstrap or "", topic, expected=6, timeout_s=5)) == 6

    assert_one_line_error(await invoke(settings, "dlq", "replay"), "choose dead letters")
    assert_one_line_error(await invoke(settings, "dlq", "list", "--reason", "bogus"), "--reason bogus: unknown")


async def inbox_outcome(database_url: str, booking: str) -> list[dict[str, Any]]:
    return await query(
        database_url, "SELECT message_id, outcome, dlq_reason FROM inbox_messages WHERE booking_id = :b", b=booking
    )


async def test_dead_letter_replayed_twice_after_a_fix_applies_once(settings: Settings, database_url: str) -> None:
    # The bad deploy: the database now rejects a valid booking (any title 'Chemistry'), so its record becomes
    # a processing_error with a dead_lettered inbox row; its neighbours apply.
    await execute(database_url, "ALTER TABLE live_sessions ADD CONSTRAINT bad_deploy CHECK (title <> 'Chemistry')")
    victim = event("BookingConfirmed", "bk_chem", 1, title="Chemistry")
    victim_record = with_headers(as_record(victim, settings.input_topic))
    produced = Produced()
    await publish_one_by_one(
        settings,
        [event("BookingApproved", "bk_ok1", 0), victim_record, event("BookingApproved", "bk_ok2", 0)],
        produced,
    )
    async with service(settings) as svc:  # running all along, as in production
        await consume_all(svc, produced)
        await replay_after_the_fix(settings, database_url, victim_record)
        await consume_all(svc, await moved_since(settings, settings.input_topic, produced))
        await svc.relay.drain()

    [row] = await inbox_outcome(database_url, "bk_chem")
    assert row["outcome"] == "applied"
    created = await query(
        database_url, "SELECT message_id FROM outbox_messages WHERE key = 'bk_chem' AND payload LIKE '%SessionCreated%'"
    )
    assert len(created) == 1
    learners = await query(database_url, "SELECT learner_id FROM session_reservations")
    assert [r["learner_id"] for r in learners] == ["student-bk_chem"]
    assert len(await read_topic(settings.kafka_bootstrap or "", settings.dlq_topic, expected=1, timeout_s=5)) == 1

    third = await invoke(settings, "dlq", "replay", "--reason", "processing_error")
    assert "replayed 0 to" in third.stdout and "skipped 1" in third.stdout, third.output
    assert "already applied" in third.stdout


async def replay_after_the_fix(settings: Settings, database_url: str, victim_record: OutgoingRecord) -> None:
    """Dry run, then two replays before the service reads either copy; both copies carry the original record."""
    [row] = await inbox_outcome(database_url, "bk_chem")
    assert (row["outcome"], row["dlq_reason"]) == ("dead_lettered", "processing_error")

    await execute(database_url, "ALTER TABLE live_sessions DROP CONSTRAINT bad_deploy")  # the fix
    dry = await invoke(settings, "dlq", "replay", "--reason", "processing_error", "--dry-run")
    assert "would replay 1 to" in dry.stdout and "resetting 1 dead_lettered inbox rows" in dry.stdout, dry.output
    assert len(await inbox_outcome(database_url, "bk_chem")) == 1

    first = await invoke(settings, "dlq", "replay", "--reason", "processing_error")
    assert "replayed 1 to" in first.stdout and "(reset 1 dead_lettered inbox rows)" in first.stdout, first.output
    assert await inbox_outcome(database_url, "bk_chem") == []
    second = await invoke(settings, "dlq", "replay", "--offset", "0:0")  # before the service saw the first copy
    assert "replayed 1 to" in second.stdout and "(reset 0 dead_lettered inbox rows)" in second.stdout, second.output

    copies = [
        r
        for r in await read_topic(settings.kafka_bootstrap or "", settings.input_topic, expected=5)
        if r.key == b"bk_chem"
    ]
    assert len(copies) == 3  # the original and two replayed copies
    for copy in copies[1:]:
        assert copy.value == victim_record.value
        headers = dict(copy.headers or ())
        assert [h for h in copy.headers or () if not h[0].startswith("dlq-replayed-")] == ORIGINAL_HEADERS
        assert headers["dlq-replayed-from"] == f"{settings.dlq_topic}/0/0".encode()
        assert headers["dlq-replayed-at"].endswith(b"Z")


async def test_dlq_list_limit_keeps_the_newest_by_failure_time_across_partitions(
    kafka: KafkaHandle, settings: Settings
) -> None:
    """Found by trying: on a DLQ of several partitions `--limit 1` showed whichever partition was fetched last, not
    the newest dead letter, and the rows came in another order each run; the counts by reason were of the shown
    rows only."""
    if kafka.kind == "tansu":
        pytest.skip(TANSU_DLQ_END)
    assert settings.kafka_bootstrap is not None
    dlq = f"{settings.dlq_topic}.six"
    await ensure_topics(settings.kafka_bootstrap, [dlq], 6)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for k in (3, 0, 5, 1, 4, 2):  # partition k's letter failed k hours after the start
            reason = b"invalid" if k % 2 else b"key_mismatch"
            failed_at = (start + timedelta(hours=k)).isoformat().encode()
            headers = [("dlq-reason", reason), ("dlq-error", b"x"), ("dlq-failed-at", failed_at)]
            await producer.send_and_wait(dlq, b"{}", key=f"bk_{k}".encode(), partition=k, headers=headers)
    finally:
        await producer.stop()
    on_six = settings.model_copy(update={"dlq_topic": dlq})

    newest = await invoke_json(on_six, "dlq", "list", "--limit", "2")
    assert [d["partition"] for d in newest["dead_letters"]] == [4, 5]
    assert (newest["matched"], newest["by_reason"]) == (6, {"invalid": 3, "key_mismatch": 3})
    every = await invoke_json(on_six, "dlq", "list", "--limit", "0")
    assert [d["partition"] for d in every["dead_letters"]] == [0, 1, 2, 3, 4, 5]
    table = await invoke(on_six, "dlq", "list", "--limit", "1")
    assert "6 of 6 dead letters match, showing the newest 1 (--limit); by reason: invalid 3, key_mismatch 3" in (
        table.stdout
    ), table.stdout
