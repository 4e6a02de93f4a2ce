"""Faults production brings: database and broker outages, rebalances, SIGTERM under load, SIGKILL anywhere.

The promise checked each time: every valid event applied once in effect, nothing lost, one session and one
SessionCreated id per booking, output repeated only with the same message ids, no dead letter for a fault
of the world.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict
from datetime import timedelta
from typing import Any

import pytest

from booking_sessions.dev.postgres import PostgresCluster
from booking_sessions.service import Service, run_until
from booking_sessions.settings import Settings
from consumer.decide import details_of, version_of
from consumer.ids import session_created_id, session_id
from models.events import BookingEvent
from tests.integration.harness import (
    Produced,
    committed_offsets,
    publish,
    query,
    read_json,
    running_process,
    service,
    sigterm,
    some_applied,
)
from tests.integration.test_scenarios import START, event
from tests.servers import ApacheKafka, KafkaHandle, PostgresHandle
from tests.waiting import eventually

pytestmark = pytest.mark.faults


def workload(bookings: int, seed: int = 1) -> list[BookingEvent]:
    """Approvals, confirmations, repeats and reschedules over ``bookings`` bookings, interleaved."""
    rng = random.Random(seed)
    per_booking: list[list[BookingEvent]] = []
    for i in range(bookings):
        name = f"bk_{i:04d}"
        approved = event("BookingApproved", name, 0)
        confirmed = event("BookingConfirmed", name, 1)
        chain = [approved, confirmed, confirmed]
        if i % 3 == 0:
            chain.append(event("BookingConfirmed", name, 2, scheduled_start=START + timedelta(hours=1)))
        per_booking.append(chain)
    stream: list[BookingEvent] = []
    while any(per_booking):  # interleave bookings, each booking's own events kept in order
        chain = rng.choice([c for c in per_booking if c])
        stream.append(chain.pop(0))
    return stream


def reference(events: list[BookingEvent]) -> dict[str, Any]:
    """What any correct run must leave: newest snapshot per booking, learners from confirmations."""
    newest: dict[str, BookingEvent] = {}
    learners: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.booking_id not in newest or version_of(e) > version_of(newest[e.booking_id]):
            newest[e.booking_id] = e
        if e.type == "BookingConfirmed":
            learners[e.booking_id].add(e.booking.student_id)
    return {
        "sessions": {b: (details_of(e), version_of(e)) for b, e in newest.items()},
        "learners": {b: s for b, s in learners.items()},
        "message_ids": {e.message_id for e in events},
    }


async def assert_matches_reference(settings: Settings, database_url: str, events: list[BookingEvent]) -> None:
    expected = reference(events)
    rows = await query(database_url, "SELECT * FROM live_sessions")
    got = {
        r["booking_request_id"]: (
            details_of_row(r),
            (r["snapshot_occurred_at"], r["snapshot_message_id"]),
        )
        for r in rows
    }
    assert got == expected["sessions"]
    assert all(r["id"] == session_id(r["booking_request_id"]) for r in rows)
    learners = await query(
        database_url,
        "SELECT s.booking_request_id AS b, p.user_id AS u FROM session_participants p"
        " JOIN live_sessions s ON s.id = p.session_id",
    )
    got_learners: dict[str, set[str]] = defaultdict(set)
    for r in learners:
        got_learners[r["b"]].add(r["u"])
    assert got_learners == expected["learners"]
    inbox = await query(database_url, "SELECT message_id, outcome FROM inbox_messages")
    assert {r["message_id"] for r in inbox} == expected["message_ids"]
    assert {r["outcome"] for r in inbox} == {"applied"}
    # Output: every outbox row published; the topic holds those ids and no others (copies only of them).
    outbox = await query(database_url, "SELECT message_id, published_at FROM outbox_messages")
    assert all(r["published_at"] is not None for r in outbox)
    messages = await read_json(settings, settings.output_topic, len(outbox))
    assert {m["body"]["message_id"] for m in messages} == {str(r["message_id"]) for r in outbox}
    # In order per booking: the first copy of each id appears in outbox (commit) order within its partition.
    outbox_order = {
        str(r["message_id"]): i
        for i, r in enumerate(await query(database_url, "SELECT message_id FROM outbox_messages ORDER BY id"))
    }
    first_seen: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for m in messages:  # read_topic returns each partition's records in offset order
        mid = m["body"]["message_id"]
        if mid not in seen:
            seen.add(mid)
            first_seen[m["body"]["booking_id"]].append(outbox_order[mid])
    assert all(order == sorted(order) for order in first_seen.values())
    created = {m["body"]["message_id"] for m in messages if m["body"]["type"] == "SessionCreated"}
    assert created == {str(session_created_id(session_id(b))) for b in expected["sessions"]}
    dead = await query(database_url, "SELECT count(*) AS n FROM inbox_messages WHERE outcome = 'dead_lettered'")
    assert dead == [{"n": 0}]


def details_of_row(row: dict[str, Any]) -> Any:
    from consumer.decide import SessionDetails

    return SessionDetails(
        row["instructor_id"], row["student_id"], row["title"], row["scheduled_start"], row["duration_minutes"]
    )


async def count(database_url: str, sql: str) -> int:
    [row] = await query(database_url, sql)
    return int(row["n"])


async def all_applied_and_published(database_url: str, events: list[BookingEvent], timeout_s: float = 90) -> None:
    wanted = len({e.message_id for e in events})

    async def done() -> bool:
        applied = await count(database_url, "SELECT count(*) AS n FROM inbox_messages")
        waiting = await count(database_url, "SELECT count(*) AS n FROM outbox_messages WHERE published_at IS NULL")
        assert applied == wanted and waiting == 0, f"{applied}/{wanted} applied, {waiting} outbox rows waiting"
        return True

    await eventually(done, what="every event applied and every outbox row published", timeout_s=timeout_s)


class Running:
    """The in-process service running in the background until ``stop()`` (or the end of an ``async with``)."""

    def __init__(self, svc: Service) -> None:
        self.stop_event = asyncio.Event()
        self.task = asyncio.create_task(run_until(svc, self.stop_event))

    async def stop(self) -> None:
        self.stop_event.set()
        await self.task

    async def __aenter__(self) -> Running:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def test_database_outage_is_retried_not_dead_lettered(
    postgres: PostgresHandle, settings: Settings, database_url: str
) -> None:
    if not isinstance(postgres.server, PostgresCluster):
        pytest.skip("the database is not ours to stop (env or testcontainers)")
    events = workload(60)
    produced = Produced()
    await publish(settings, events[:60], produced)
    async with service(settings) as svc, Running(svc):
        await some_applied(database_url, "the first batch applied")
        outage = postgres.server.down()
        await asyncio.to_thread(outage.__enter__)
        try:
            await publish(settings, events[60:], produced)  # arrives while PostgreSQL is away
            await asyncio.sleep(3)  # the outage itself, not synchronisation: 3 s without a database
        finally:
            await asyncio.to_thread(outage.__exit__, None, None, None)
        await all_applied_and_published(database_url, events)
    await assert_matches_reference(settings, database_url, events)
    assert await read_json(settings, settings.dlq_topic, 0) == []


async def test_broker_restart_mid_stream_loses_nothing(
    kafka: KafkaHandle, settings: Settings, database_url: str
) -> None:
    if not isinstance(kafka.server, ApacheKafka):
        pytest.skip("needs our own Apache Kafka: Tansu keeps no log across a restart")
    events = workload(60)
    produced = Produced()
    await publish(settings, events, produced)
    async with service(settings) as svc, Running(svc):
        await some_applied(database_url, "the first batch applied")
        await asyncio.to_thread(kafka.server.restart)
        await all_applied_and_published(database_url, events, timeout_s=120)
    await assert_matches_reference(settings, database_url, events)


async def test_rebalance_when_a_consumer_joins_and_the_first_leaves(settings: Settings, database_url: str) -> None:
    events = workload(150)
    produced = Produced()
    await publish(settings, events[:150], produced)
    async with contextlib.AsyncExitStack() as second_stack:
        async with service(settings) as first, Running(first):
            await some_applied(database_url, "the first consumer at work")
            second = await second_stack.enter_async_context(service(settings))
            await second_stack.enter_async_context(Running(second))
            await publish(settings, events[150:300], produced)

            async def both_assigned() -> bool:
                sizes = sorted(len(s.consumer.assignment()) for s in (first, second))
                assert sizes == [6, 6], f"assignments {sizes}"
                return True

            await eventually(both_assigned, what="the second consumer to get its share", timeout_s=60)
        # The first consumer has left the group (its consumer is closed) mid-stream.
        await publish(settings, events[300:], produced)
        await all_applied_and_published(database_url, events, timeout_s=120)

        async def second_has_all() -> bool:
            assert len(second.consumer.assignment()) == 12, f"{len(second.consumer.assignment())} partitions"
            return True

        await eventually(second_has_all, what="the remaining consumer to own every partition")
    await assert_matches_reference(settings, database_url, events)


async def test_sigterm_under_load_exits_zero_with_everything_applied_committed(
    settings: Settings, database_url: str
) -> None:
    events = workload(400)
    produced = Produced()
    await publish(settings, events, produced)
    async with running_process(settings) as process:
        await some_applied(database_url)
        stderr = await sigterm(process, timeout_s=40)
    assert process.returncode == 0, stderr.decode()[-3000:]
    # Offsets committed for everything applied: per partition, one past the last applied record.
    applied = await query(
        database_url,
        'SELECT partition, max("offset") AS last FROM inbox_messages GROUP BY partition',
    )
    committed = await committed_offsets(settings, list(produced.ends))
    for row in applied:
        tp = (settings.input_topic, row["partition"])
        assert committed[tp] is not None and committed[tp] >= row["last"] + 1, (tp, committed[tp], row["last"])
    # And nothing beyond what was applied (repeats apart, which the inbox does not list again).
    for tp, offset in committed.items():
        assert offset is None or offset <= produced.ends[tp]


async def test_sigkill_at_any_point_then_restart_leaves_the_uninterrupted_result(
    settings: Settings, database_url: str
) -> None:
    events = workload(300, seed=3)
    produced = Produced()
    await publish(settings, events, produced)
    total = len({e.message_id for e in events})
    for fraction in (0.1, 0.4, 0.7):  # killed early, mid-stream and late
        # Small batches: many transaction boundaries, so a kill lands before, during or after a commit.
        # Leaving the block SIGKILLs the process wherever it is.
        async with running_process(settings, BOOKING_MAX_BATCH_RECORDS="40", BOOKING_RELAY_BATCH_ROWS="25"):

            async def progressed(at: float = fraction) -> bool:
                applied = await count(database_url, "SELECT count(*) AS n FROM inbox_messages")
                assert applied >= at * total, f"{applied} of {total} applied"
                return True

            await eventually(progressed, what=f"{fraction:.0%} applied", timeout_s=90, interval_s=0.01)
    async with running_process(settings) as process:
        await all_applied_and_published(database_url, events, timeout_s=120)
        await sigterm(process, timeout_s=40)
    await assert_matches_reference(settings, database_url, events)
