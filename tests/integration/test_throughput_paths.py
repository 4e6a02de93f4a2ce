"""The paths that make a batch fast must not change what it does: a large batch applied in parallel transactions
on disjoint bookings, and the loop fetching and decoding the next batch while the current one is applied."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.event import listen
from sqlalchemy.exc import OperationalError

from booking_sessions.service import run_until
from booking_sessions.settings import Settings
from booking_sessions.topics import read_topic
from consumer.batch import MIN_PART_RECORDS
from consumer.ids import session_created_id, session_id, session_updated_id
from consumer.results import BatchResult
from models.events import BookingEvent
from models.records import Decoded, Record
from producer.bookings import as_record, encode
from tests.integration.bookings import START, event
from tests.integration.dead_letters import refuse_in_database
from tests.integration.harness import Produced, committed_offsets, publish, query, read_json, service
from tests.waiting import eventually


def histories(bookings: int) -> list[BookingEvent]:
    """Approve, confirm, and for every third booking a reschedule: in the order the booking service sends."""
    events = []
    for i in range(bookings):
        b = f"bk_{i:04d}"
        events += [event("BookingApproved", b, 0), event("BookingConfirmed", b, 1)]
        if i % 3 == 0:
            events.append(event("BookingConfirmed", b, 2, scheduled_start=START + timedelta(hours=1), title="Moved"))
    return events


@pytest.mark.partitions(1)
async def test_a_large_batch_in_parallel_transactions_applies_as_one_would(
    settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = histories(200)  # 467 events in one partition: one batch, shared out in two transactions
    await refuse_in_database(database_url, "bk_poison")  # valid, but PostgreSQL refuses it
    poison = event("BookingConfirmed", "bk_poison", 1)
    original = events[10]
    forged = original.model_copy(update={"booking": original.booking.model_copy(update={"title": "Forged"})})
    stream = [*events[:300], poison, original, forged, *events[300:]]  # a repeat and a conflict in the batch
    assert len(stream) >= 2 * MIN_PART_RECORDS  # enough for two parts
    produced = Produced()
    await publish(settings, [as_record(e, settings.input_topic) for e in stream], produced)

    one = settings.model_copy(update={"max_batch_records": 5000, "parallel_transactions": 2})
    results: list[BatchResult] = []
    in_flight, most_in_flight = 0, 0
    parts: list[set[str | None]] = []
    async with service(one) as svc:
        processor = svc.loop.processor
        transact = processor._transact

        async def watched(part: Sequence[Decoded], *args: Any) -> BatchResult:
            nonlocal in_flight, most_in_flight
            in_flight += 1
            most_in_flight = max(most_in_flight, in_flight)
            parts.append({d.booking_id for d in part})
            try:
                return await transact(part, *args)
            finally:
                in_flight -= 1

        monkeypatch.setattr(processor, "_transact", watched)
        while sum(r.records for r in results) < len(stream):
            if (result := await svc.loop.run_once()) is not None:
                results.append(result)
        await svc.relay.drain()

    assert most_in_flight == 2, "the batch should have been applied in two transactions at once"
    first, second = parts[0] - {None}, parts[1] - {None}
    assert first and second and not first & second, "the two transactions must hold disjoint bookings"
    assert sum(r.applied for r in results) == len(events)
    assert sum(r.duplicates for r in results) == 1
    assert sum((r.dead_lettered for r in results), Counter()) == {"processing_error": 1, "message_id_conflict": 1}

    sessions = await query(database_url, "SELECT booking_request_id, title FROM live_sessions ORDER BY 1")
    assert [s["booking_request_id"] for s in sessions] == [f"bk_{i:04d}" for i in range(200)]
    assert [s["title"] for s in sessions] == ["Moved" if i % 3 == 0 else "Algebra II" for i in range(200)]
    learners = await query(database_url, "SELECT count(*) AS n FROM session_reservations WHERE status = 'CONFIRMED'")
    assert learners == [{"n": 200}]
    inbox = await query(database_url, "SELECT outcome, count(*) AS n FROM inbox_messages GROUP BY 1 ORDER BY 1")
    assert inbox == [{"outcome": "applied", "n": len(events)}, {"outcome": "dead_lettered", "n": 1}]
    assert settings.kafka_bootstrap is not None
    dead = await read_topic(settings.kafka_bootstrap, settings.dlq_topic, expected=2, timeout_s=20)
    reasons = sorted(dict(d.headers or ())["dlq-reason"] for d in dead)
    assert reasons == [b"message_id_conflict", b"processing_error"]

    # One SessionCreated per booking. A reschedule in the same transaction as its booking's creation is already
    # in it; one the bisection around the poison put in a later transaction is a SessionUpdated.
    outbox = await query(database_url, "SELECT count(*) AS n FROM outbox_messages")
    messages = [m["body"] for m in await read_json(settings, settings.output_topic, outbox[0]["n"])]
    assert len(messages) == outbox[0]["n"]
    created = {m["message_id"] for m in messages if m["type"] == "SessionCreated"}
    assert created == {str(session_created_id(session_id(f"bk_{i:04d}"))) for i in range(200)}
    updated = {m["message_id"] for m in messages if m["type"] == "SessionUpdated"}
    moved = {session_updated_id(session_id(e.booking_id), e.message_id) for e in events if e.booking.title == "Moved"}
    assert updated <= {str(u) for u in moved}


@pytest.mark.partitions(1)
async def test_a_transient_fault_in_one_part_retries_that_part_alone_and_counts_the_batch_once(
    settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = histories(200)
    produced = Produced()
    await publish(settings, [as_record(e, settings.input_topic) for e in events], produced)

    calls: list[frozenset[str | None]] = []
    async with service(settings.model_copy(update={"max_batch_records": 5000})) as svc:
        processor = svc.loop.processor
        transact = processor._transact

        async def connection_lost_once(part: Sequence[Decoded], *args: Any) -> BatchResult:
            calls.append(frozenset(d.booking_id for d in part))
            if len(calls) == 1:
                raise OperationalError("INSERT INTO inbox_messages", {}, ConnectionResetError("connection lost"))
            return await transact(part, *args)

        monkeypatch.setattr(processor, "_transact", connection_lost_once)
        results: list[BatchResult] = []
        while sum(r.records for r in results) < len(events):
            if (result := await svc.loop.run_once()) is not None:
                results.append(result)
        await svc.relay.drain()

    assert len(calls) == 3, "two parts, then the failed one again"
    assert calls[2] == calls[0] and not calls[0] & calls[1]
    assert [(r.records, r.applied, r.duplicates, r.sessions_created) for r in results] == [
        (len(events), len(events), 0, 200)
    ]
    sessions = await query(database_url, "SELECT count(*) AS n FROM live_sessions")
    outbox = await query(database_url, "SELECT count(*) AS n FROM outbox_messages WHERE published_at IS NOT NULL")
    assert sessions == [{"n": 200}] and outbox == [{"n": 200}]


@pytest.mark.partitions(3)
async def test_run_fetching_ahead_applies_every_partition_in_order_and_commits_the_end(
    settings: Settings, database_url: str
) -> None:
    events = histories(90)
    produced = Produced()
    await publish(settings, [as_record(e, settings.input_topic) for e in events], produced)

    small = settings.model_copy(update={"max_batch_records": 7})  # many batches: one is always fetched ahead
    committed = await run_until_committed(small, produced)

    assert len(committed) >= len(events) // 7
    # Per partition, each batch starts where the one before ended: nothing skipped, nothing applied twice.
    ends: dict[tuple[str, int], list[int]] = defaultdict(list)
    for r in committed:
        for tp, offset in r.next_offsets.items():
            ends[tp].append(offset)
    assert all(offsets == sorted(set(offsets)) for offsets in ends.values())
    assert sum(r.applied for r in committed) == len(events)
    assert await committed_offsets(settings, list(produced.ends)) == produced.ends

    # Each booking's output in its event order: SessionCreated first; a reschedule that came in a later batch
    # than the creation is a SessionUpdated after it (in the same batch, the creation already shows it).
    outbox = await query(database_url, "SELECT count(*) AS n FROM outbox_messages")
    messages = await read_json(settings, settings.output_topic, outbox[0]["n"])
    by_booking: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in messages:
        by_booking[m["body"]["booking_id"]].append(m["body"])
    assert sorted(by_booking) == [f"bk_{i:04d}" for i in range(90)]
    for booking, bodies in by_booking.items():
        types = [b["type"] for b in bodies]
        rescheduled = int(booking[3:]) % 3 == 0
        assert (
            types in (["SessionCreated", "SessionUpdated"], ["SessionCreated"]) if rescheduled else ["SessionCreated"]
        )
        assert bodies[-1]["session"]["title"] == ("Moved" if rescheduled else "Algebra II")
    rows = await query(database_url, "SELECT count(*) AS n FROM live_sessions")
    assert rows == [{"n": 90}]


async def run_until_committed(settings: Settings, produced: Produced) -> list[BatchResult]:
    """``run`` until every produced record's offset is committed; each committed batch's result, in order."""
    committed: list[BatchResult] = []
    stop = asyncio.Event()
    async with service(settings) as svc:
        hook = svc.loop._after_commit

        async def after_commit(result: BatchResult) -> None:
            committed.append(result)
            if hook is not None:
                await hook(result)

        svc.loop._after_commit = after_commit
        running = asyncio.create_task(run_until(svc, stop))

        async def everything_committed() -> bool:
            seen: dict[tuple[str, int], int] = {}
            for r in committed:
                for tp, offset in r.next_offsets.items():
                    seen[tp] = max(seen.get(tp, 0), offset)
            return all(seen.get(tp, 0) >= end for tp, end in produced.ends.items())

        await eventually(everything_committed, what="offsets committed past every record", timeout_s=60)
        stop.set()
        await running
    return committed


async def test_a_backlog_is_applied_in_catch_up_batches_from_the_brokers_high_watermarks(
    settings: Settings, database_url: str
) -> None:
    events = histories(300)  # 700 events, all on the broker before the service starts: a backlog
    produced = Produced()
    await publish(settings, [as_record(e, settings.input_topic) for e in events], produced)

    sizes = {"max_batch_records": 20, "catch_up_batch_records": 200}
    committed = await run_until_committed(settings.model_copy(update=sizes), produced)

    records = [r.records for r in committed]
    assert max(records) <= 200, records
    # In batches of 20 it takes 35 batches; the lag seen in the fetch responses lets most of it go 200 at a time.
    assert sum(n > 20 for n in records) >= 2 and len(records) < 35 // 2, records
    assert sum(r.applied for r in committed) == len(events)
    assert await committed_offsets(settings, list(produced.ends)) == produced.ends
    rows = await query(database_url, "SELECT count(*) AS n FROM live_sessions")
    assert rows == [{"n": 300}]


@pytest.mark.partitions(1)
async def test_a_batch_says_its_statements_are_out_before_any_comes_back_and_says_it_once(settings: Settings) -> None:
    # The consume loop fetches the next batch when told (consumer/loop.py, _fetch_ahead): told too late, the fetch
    # no longer overlaps the batch's wait for PostgreSQL; told twice, it would fetch two batches ahead.
    records = [
        Record(settings.input_topic, 0, offset, e.booking_id.encode(), encode(e))
        for offset, e in enumerate(histories(2 * MIN_PART_RECORDS))
    ]
    one = settings.model_copy(update={"parallel_transactions": 2})
    async with service(one) as svc:
        finished: list[str] = []
        told: list[int] = []

        def statement_done(*_: object) -> None:
            finished.append("statement")

        listen(svc.engine.sync_engine, "after_cursor_execute", statement_done)
        processor = svc.loop.processor
        prepared = await processor.prepare(records)
        result = await processor.apply(prepared, lambda: told.append(len(finished)))

        assert result.applied == len(records)
        assert told == [0], "told once, before any statement of the batch came back"
        assert len(finished) >= 4, "two transactions of two statements each"
        # Applied again (as after a transient fault in another part), every part has committed: told at once.
        again: list[int] = []
        await processor.apply(prepared, lambda: again.append(len(finished)))
        assert again == [len(finished)]
